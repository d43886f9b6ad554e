//! Room names: the document id carried in the WebSocket URL path.

use std::fmt;

use percent_encoding::percent_decode_str;

use crate::{Limits, ProtocolError};

/// A validated room name: non-empty, at most [`Limits::max_room_name`] UTF-8 bytes once
/// percent-decoded, no control characters and no `/`, so it is safe in logs, URLs and store keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

impl RoomName {
    /// Validates an already percent-decoded name (axum's `Path` decodes for you).
    ///
    /// # Errors
    /// [`ProtocolError::InvalidRoomName`] saying which rule was broken.
    pub fn parse(decoded: &str, limits: &Limits) -> Result<Self, ProtocolError> {
        if decoded.is_empty() {
            return Err(ProtocolError::InvalidRoomName("empty"));
        }
        if decoded.len() > limits.max_room_name {
            return Err(ProtocolError::InvalidRoomName("too long"));
        }
        if decoded.chars().any(char::is_control) {
            return Err(ProtocolError::InvalidRoomName(
                "contains a control character",
            ));
        }
        if decoded.contains('/') {
            return Err(ProtocolError::InvalidRoomName("contains '/'"));
        }
        if decoded == "." || decoded == ".." {
            // Browsers and URL libraries resolve these as path steps: `/d/..` is `/`.
            return Err(ProtocolError::InvalidRoomName(
                "is \".\" or \"..\", which addresses read as a folder step",
            ));
        }
        if decoded.trim() != decoded {
            return Err(ProtocolError::InvalidRoomName(
                "has leading or trailing whitespace",
            ));
        }
        Ok(Self(decoded.to_owned()))
    }

    /// Percent-decodes a raw URL path segment, then validates it as [`RoomName::parse`] does.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidRoomName`] when the decoded bytes are not UTF-8 or break a rule.
    pub fn from_percent_encoded(raw: &str, limits: &Limits) -> Result<Self, ProtocolError> {
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| ProtocolError::InvalidRoomName("not UTF-8 after percent-decoding"))?;
        Self::parse(&decoded, limits)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RoomName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UUIDs, words and non-ASCII names pass; each broken rule is named.
    #[test]
    fn rules() {
        let l = Limits::DEFAULT;
        for ok in [
            "3f2b0c1e-8d1f-4c63-9a43-5b9e1f0a2c77",
            "notes",
            "Käse & Brot",
            "a.b_c-d",
            "...",
            "..notes",
        ] {
            assert_eq!(RoomName::parse(ok, &l).unwrap().as_str(), ok);
        }
        let cases = [
            ("", "empty"),
            ("a\u{0}b", "contains a control character"),
            ("line\nbreak", "contains a control character"),
            ("a/b", "contains '/'"),
            (" pad", "has leading or trailing whitespace"),
            (
                "..",
                "is \".\" or \"..\", which addresses read as a folder step",
            ),
            (
                ".",
                "is \".\" or \"..\", which addresses read as a folder step",
            ),
        ];
        for (bad, why) in cases {
            assert_eq!(
                RoomName::parse(bad, &l),
                Err(ProtocolError::InvalidRoomName(why)),
                "{bad:?}"
            );
        }
        let long = "x".repeat(l.max_room_name + 1);
        assert_eq!(
            RoomName::parse(&long, &l),
            Err(ProtocolError::InvalidRoomName("too long"))
        );
    }

    /// Percent-encoded input is decoded before validation, so `%0A` is caught as a control char.
    #[test]
    fn percent_decoding() {
        let l = Limits::DEFAULT;
        assert_eq!(
            RoomName::from_percent_encoded("K%C3%A4se", &l)
                .unwrap()
                .as_str(),
            "Käse"
        );
        assert_eq!(
            RoomName::from_percent_encoded("a%0Ab", &l),
            Err(ProtocolError::InvalidRoomName(
                "contains a control character"
            ))
        );
        assert_eq!(
            RoomName::from_percent_encoded("%FF", &l),
            Err(ProtocolError::InvalidRoomName(
                "not UTF-8 after percent-decoding"
            ))
        );
    }
}
