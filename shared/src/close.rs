//! WebSocket close codes Weft sends, named: the RFC 6455 codes (section 7.4.1) for socket-level
//! failures and the 4000-range codes y-websocket clients understand (`4400`–`4499`: do not
//! reconnect; y-websocket 3 stops on them as it does for `4410`).

/// A close code of a WebSocket closed by Weft, or expected from it by a client or test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// 1000: the work is done; a normal close.
    Normal = 1000,
    /// 1001: the server is shutting down (clients reconnect).
    GoingAway = 1001,
    /// 1002: the peer broke the WebSocket framing rules.
    Protocol = 1002,
    /// 1003: a kind of message this endpoint does not take (text on a binary protocol).
    Unsupported = 1003,
    /// 1007: data inconsistent with its type: text that is not UTF-8, a frame or update that
    /// does not decode.
    InvalidData = 1007,
    /// 1008: a policy was broken: rate limit, handshake deadline.
    Policy = 1008,
    /// 1009: a message over the size limit.
    TooBig = 1009,
    /// 1011: the server could not go on (storage failure, a crash contained in the room).
    Internal = 1011,
    /// 1013: try again later: the peer read too slowly, or the server is at a limit.
    TryAgainLater = 1013,
    /// 4401: the token is missing, invalid or expired (the client needs a fresh one).
    Unauthorized = 4401,
    /// 4403: the token does not cover this document or this role, or the origin is refused.
    Forbidden = 4403,
    /// 4410: the document was deleted (y-websocket stops reconnecting).
    Deleted = 4410,
}

impl CloseCode {
    /// The numeric code, as sent in the close frame.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The named code for a number, if Weft uses it.
    pub const fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1000 => Self::Normal,
            1001 => Self::GoingAway,
            1002 => Self::Protocol,
            1003 => Self::Unsupported,
            1007 => Self::InvalidData,
            1008 => Self::Policy,
            1009 => Self::TooBig,
            1011 => Self::Internal,
            1013 => Self::TryAgainLater,
            4401 => Self::Unauthorized,
            4403 => Self::Forbidden,
            4410 => Self::Deleted,
            _ => return None,
        })
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl From<CloseCode> for u16 {
    fn from(c: CloseCode) -> Self {
        c.code()
    }
}

impl PartialEq<u16> for CloseCode {
    fn eq(&self, other: &u16) -> bool {
        self.code() == *other
    }
}

impl PartialEq<CloseCode> for u16 {
    fn eq(&self, other: &CloseCode) -> bool {
        *self == other.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every named code maps back to itself through its number.
    #[test]
    fn codes_round_trip() {
        for c in [
            CloseCode::Normal,
            CloseCode::GoingAway,
            CloseCode::Protocol,
            CloseCode::Unsupported,
            CloseCode::InvalidData,
            CloseCode::Policy,
            CloseCode::TooBig,
            CloseCode::Internal,
            CloseCode::TryAgainLater,
            CloseCode::Unauthorized,
            CloseCode::Forbidden,
            CloseCode::Deleted,
        ] {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert_eq!(CloseCode::from_code(4000), None);
        assert_eq!(CloseCode::TryAgainLater, 1013u16);
    }
}
