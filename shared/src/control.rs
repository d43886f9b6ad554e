//! Weft control messages: a JSON side channel for what the y-websocket protocol lacks.
//!
//! They travel under the custom tag [`crate::MESSAGE_CONTROL`] as one varString of JSON. Stock
//! Yjs clients log an error on unknown tags, so the server sends control messages only to a
//! connection that first sent [`Control::Hello`]. The schema is documented on the crate root.

use serde::{Deserialize, Serialize};

/// What a connection may do in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Receives the document and awareness; its writes are dropped.
    Read,
    /// May edit the document.
    Write,
}

/// Severity of a [`Control::Notice`], for how the editor shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeLevel {
    /// Plain information.
    Info,
    /// Something the user should notice.
    Warning,
    /// Something went wrong.
    Error,
}

/// Longest display name kept, in characters: as awareness names are shown, 64 is plenty. A
/// longer one is cut on decoding, so a member cannot make every relay of its name (each typing
/// hint, to every member) as large as a control message may be.
pub const MAX_USER_NAME_CHARS: usize = 64;

/// Longest colour kept, in characters (`#30bced`, `rgb(…)`, `hsl(…)` all fit).
pub const MAX_USER_COLOR_CHARS: usize = 32;

/// Who a person is, as shown in presence lists and typing hints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Display name, at most [`MAX_USER_NAME_CHARS`] characters (cut when decoded).
    #[serde(deserialize_with = "capped_name")]
    pub name: String,
    /// CSS colour, for example `#30bced`; at most [`MAX_USER_COLOR_CHARS`] characters.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "capped_color"
    )]
    pub color: Option<String>,
}

/// `s` cut to its first `max` characters.
fn cut(mut s: String, max: usize) -> String {
    if let Some((at, _)) = s.char_indices().nth(max) {
        s.truncate(at);
    }
    s
}

fn capped_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(cut(String::deserialize(d)?, MAX_USER_NAME_CHARS))
}

fn capped_color<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|c| cut(c, MAX_USER_COLOR_CHARS)))
}

/// One control message; `type` in the JSON selects the variant (snake_case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Client → server: opt in to control messages, optionally saying who the user is.
    Hello {
        /// The user behind this connection, for presence and typing hints.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<UserInfo>,
    },
    /// Server → client, answering `hello`: this connection's id and role, and the room's size.
    Welcome {
        /// Server-assigned connection id (a UUID).
        connection: String,
        /// What this connection may do.
        role: Role,
        /// The room (document id) joined.
        room: String,
        /// Connections in the room, this one included.
        users: u32,
    },
    /// Server → client: another connection joined the room.
    Joined {
        /// The connection that joined.
        connection: String,
        /// Who it is, when it said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<UserInfo>,
        /// Connections in the room now.
        users: u32,
    },
    /// Server → client: a connection left the room.
    Left {
        /// The connection that left.
        connection: String,
        /// Connections in the room now.
        users: u32,
    },
    /// Both ways: a typing hint. Clients send `{"type":"typing","active":true}`; the server fills
    /// in `connection` and `user` (whatever the client claimed there is overwritten) and relays it
    /// to the rest of the room.
    Typing {
        /// The connection typing; set by the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection: Option<String>,
        /// Who is typing; set by the server from the connection's `hello`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<UserInfo>,
        /// Whether they are typing now.
        active: bool,
    },
    /// Server → client: a notification to show the user.
    Notice {
        /// How to show it.
        level: NoticeLevel,
        /// The text.
        text: String,
    },
    /// Server → client: a request failed; `code` is stable, `message` is for people.
    Error {
        /// Stable machine-readable code, for example `read_only`.
        code: String,
        /// Human explanation.
        message: String,
    },
    /// Server → client: every update of the room up to `version` is durable on disk.
    Saved {
        /// The room's durable update count.
        version: u64,
    },
    /// Server → client: the document was given this title (through the API); editors show it.
    Title {
        /// The new title.
        title: String,
    },
    /// Any `type` this version does not know; ignored, so newer peers can add messages.
    #[serde(other)]
    Unknown,
}

impl Control {
    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail: no maps with non-string keys, no floats.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"type\":\"unknown\"}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A huge name or colour in `hello` is cut to its cap on decoding, at a character boundary.
    #[test]
    fn user_names_and_colours_are_capped() {
        let name = "é".repeat(64 * 1024);
        let json = format!(r#"{{"type":"hello","user":{{"name":"{name}","color":"{name}"}}}}"#);
        let Ok(Control::Hello { user: Some(user) }) = serde_json::from_str::<Control>(&json) else {
            panic!("hello did not decode");
        };
        assert_eq!(user.name.chars().count(), MAX_USER_NAME_CHARS);
        assert_eq!(
            user.color.map(|c| c.chars().count()),
            Some(MAX_USER_COLOR_CHARS)
        );
        let short: Control =
            serde_json::from_str(r#"{"type":"hello","user":{"name":"Ana"}}"#).expect("decodes");
        assert_eq!(
            short,
            Control::Hello {
                user: Some(UserInfo {
                    name: "Ana".into(),
                    color: None
                })
            }
        );
    }

    /// The documented JSON shapes are what serde produces and accepts.
    #[test]
    fn json_shapes_match_docs() {
        let w = Control::Welcome {
            connection: "c1".into(),
            role: Role::Write,
            room: "r".into(),
            users: 2,
        };
        assert_eq!(
            w.to_json(),
            r#"{"type":"welcome","connection":"c1","role":"write","room":"r","users":2}"#
        );
        let t: Control = serde_json::from_str(r#"{"type":"typing","active":true}"#).unwrap();
        assert_eq!(
            t,
            Control::Typing {
                connection: None,
                user: None,
                active: true
            }
        );
        let s: Control = serde_json::from_str(r#"{"type":"saved","version":7}"#).unwrap();
        assert_eq!(s, Control::Saved { version: 7 });
    }

    /// A control type from a newer peer decodes as `Unknown` instead of failing the frame.
    #[test]
    fn unknown_type_is_tolerated() {
        let c: Control = serde_json::from_str(r#"{"type":"from_the_future","x":1}"#).unwrap();
        assert_eq!(c, Control::Unknown);
    }
}
