//! Who changed the text: every write the room applies is attributed to an author, and the
//! names are gathered until whoever reports on the document's changes takes them (the version
//! history asks "who wrote since the last version", the change feed "since the last event").
//!
//! A member's name is, in order: the `sub` of its token (auth on), the name it gave in the
//! control `hello`, the `user.name` of its awareness state, else [`ANONYMOUS`]. A write that no
//! member made (the HTTP API) names its author when it is delivered.

use std::collections::BTreeSet;

use weft_protocol::MAX_USER_NAME_CHARS;

use crate::room::{ConnId, Room};

/// The author of a write nobody put a name to.
pub(crate) const ANONYMOUS: &str = "anonymous";

/// Most distinct names gathered for one reader between two takes: a room with hundreds of
/// writers reports the first ones, not an unbounded list.
const MAX_NAMES: usize = 64;

/// Whose account of the changes a set of names is for; each takes its own names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// Since the document's last recorded version.
    Version,
    /// Since the change feed's last event for the document.
    #[allow(dead_code)] // Taken by the change feed.
    Feed,
}

/// Authors of the writes since each reader last took them, in name order.
#[derive(Debug, Default)]
pub(crate) struct Authors {
    version: BTreeSet<String>,
    feed: BTreeSet<String>,
}

impl Authors {
    /// Counts `name` as an author for every reader.
    pub(crate) fn record(&mut self, name: &str) {
        for set in [&mut self.version, &mut self.feed] {
            if set.len() < MAX_NAMES && !set.contains(name) {
                set.insert(name.to_owned());
            }
        }
    }

    /// The names gathered for `since`, sorted, leaving that reader's set empty.
    pub(crate) fn take(&mut self, since: Since) -> Vec<String> {
        let set = match since {
            Since::Version => &mut self.version,
            Since::Feed => &mut self.feed,
        };
        std::mem::take(set).into_iter().collect()
    }

    /// Whether anyone wrote since `since` last took the names.
    #[allow(dead_code)] // Asked by the change feed.
    pub(crate) fn any(&self, since: Since) -> bool {
        match since {
            Since::Version => !self.version.is_empty(),
            Since::Feed => !self.feed.is_empty(),
        }
    }
}

impl Room {
    /// The name a write by `conn` is attributed to.
    pub(super) fn author_of(&self, conn: ConnId) -> String {
        let Some(m) = self.members.get(&conn) else {
            return ANONYMOUS.into();
        };
        let named = m
            .subject
            .clone()
            .or_else(|| m.user.as_ref().map(|u| u.name.clone()))
            .or_else(|| self.presence.name_of(conn));
        named
            .map(|n| cap(n.trim()))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| ANONYMOUS.into())
    }
}

/// `name` cut to the length a user name may have.
fn cap(name: &str) -> String {
    name.chars().take(MAX_USER_NAME_CHARS).collect()
}

/// The `user.name` of an awareness state (JSON), if it has one.
pub(crate) fn awareness_name(state: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(state).ok()?;
    let name = value.get("user")?.get("name")?.as_str()?;
    Some(cap(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reader_takes_its_own_names() {
        let mut a = Authors::default();
        a.record("bo");
        a.record("al");
        a.record("bo");
        assert_eq!(a.take(Since::Version), ["al", "bo"]);
        assert!(!a.any(Since::Version));
        a.record("cy");
        assert_eq!(a.take(Since::Version), ["cy"]);
        assert_eq!(a.take(Since::Feed), ["al", "bo", "cy"]);
        assert!(a.take(Since::Feed).is_empty());
    }

    #[test]
    fn names_are_bounded() {
        let mut a = Authors::default();
        for i in 0..1000 {
            a.record(&format!("writer {i}"));
        }
        assert_eq!(a.take(Since::Feed).len(), MAX_NAMES);
    }

    #[test]
    fn awareness_names() {
        assert_eq!(
            awareness_name(r##"{"user":{"name":"Ada","color":"#fff"},"cursor":null}"##).as_deref(),
            Some("Ada")
        );
        assert_eq!(awareness_name(r##"{"user":{"color":"#fff"}}"##), None);
        assert_eq!(awareness_name("null"), None);
        assert_eq!(awareness_name("not json"), None);
        let long = format!(r#"{{"user":{{"name":"{}"}}}}"#, "x".repeat(500));
        assert_eq!(
            awareness_name(&long).map(|n| n.chars().count()),
            Some(MAX_USER_NAME_CHARS)
        );
    }
}
