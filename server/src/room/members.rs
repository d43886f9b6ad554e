//! Members coming, going and talking: admission (sync step 1 and the awareness snapshot for
//! every joiner), departure (their awareness removed, a `left` notice), and each message a
//! member sends: sync (answered from the document, or the cached whole-document step 2),
//! updates (to `Room::write`), awareness, and Weft's control messages.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use tracing::warn;
use weft_protocol::{encode_sync, CloseCode, Control, Message, SYNC_STEP1, SYNC_STEP2};
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, Transact};

use crate::room::fanout::{Member, Target};
use crate::room::yrs_guards::{contain, decode_state_vector};
use crate::room::{ConnId, JoinError, Joiner, Room};
use crate::store::now_ms;

impl Room {
    /// Admits `j` unless the room is full; its sync step 1 goes out with the batch.
    pub(super) fn join(&mut self, j: Joiner) -> Result<(), JoinError> {
        let max = self.ctx.config.max_room_connections;
        if self.members.len() >= max {
            return Err(JoinError::Full(max));
        }
        let sv = self.doc.transact().state_vector().encode_v1();
        self.queued
            .push((Target::One(j.id), Bytes::from(encode_sync(SYNC_STEP1, &sv))));
        let snapshot = self.presence.welcome(j.id);
        self.peers_welcome();
        if !snapshot.entries.is_empty() {
            self.queued.push((
                Target::One(j.id),
                Bytes::from(Message::Awareness(snapshot).encode()),
            ));
        }
        self.members.insert(
            j.id,
            Member::new(j.uuid, j.outbox, j.role, j.subject, j.hocuspocus),
        );
        self.live
            .users
            .store(self.members.len() as u32, Ordering::Relaxed);
        self.empty_since = None;
        Ok(())
    }

    /// Removes a member: its awareness states go, opted-in members hear it left.
    pub(super) fn leave(&mut self, conn: ConnId) {
        let Some(member) = self.members.remove(&conn) else {
            return;
        };
        self.live
            .users
            .store(self.members.len() as u32, Ordering::Relaxed);
        let removed = self.presence.remove_connection(conn, Instant::now());
        self.share_awareness(&removed);
        self.queue_awareness(removed);
        if member.control {
            let left = Control::Left {
                connection: member.uuid,
                users: self.members.len() as u32,
            };
            self.queue_control(Target::ControlExcept(None), &left);
        }
        if self.members.is_empty() {
            self.empty_since = Some(Instant::now());
        }
    }

    /// The messages of one frame of `conn`, in order, until one of them ends its membership.
    /// Only the first sync step 1 and the first awareness query of a frame are answered: each
    /// answer is a copy of the document or of the awareness table, built for this member alone,
    /// and a frame may pack dozens of messages. Later ones in the same frame are ignored.
    pub(super) fn messages(&mut self, conn: ConnId, msgs: Vec<Message>) {
        self.live.active_ms.store(now_ms(), Ordering::Relaxed);
        let (mut step1, mut query) = (false, false);
        for msg in msgs {
            if !self.members.contains_key(&conn) {
                break;
            }
            let repeated = match msg {
                Message::SyncStep1(_) => std::mem::replace(&mut step1, true),
                Message::QueryAwareness => std::mem::replace(&mut query, true),
                _ => false,
            };
            if !repeated {
                self.message(conn, msg);
            }
        }
    }

    fn message(&mut self, conn: ConnId, msg: Message) {
        match msg {
            Message::SyncStep1(sv) => self.answer_step1(conn, &sv),
            Message::SyncStep2(update) | Message::Update(update) => self.write(conn, update),
            Message::Awareness(update) => {
                let applied = self.presence.apply(conn, update, Instant::now());
                if applied.foreign > 0 {
                    warn!(room = %self.name, conn, refused = applied.foreign,
                        "awareness update touched client ids owned by another connection");
                }
                self.share_awareness(&applied.accepted);
                self.queue_awareness_from(conn, applied.accepted, applied.echo);
            }
            Message::QueryAwareness => {
                let snapshot = self.presence.snapshot(conn);
                let frame = Bytes::from(Message::Awareness(snapshot).encode());
                if self.reserve(conn, frame.len()) {
                    self.queued.push((Target::One(conn), frame));
                }
            }
            Message::Control(c) => self.control(conn, c),
            Message::PermissionDenied(_) => {}
        }
    }

    /// A control message: `hello` is welcomed (and announced the first time), a typing hint is
    /// relayed. Past the member's control rate (the first `hello` aside) they are dropped.
    fn control(&mut self, conn: ConnId, c: Control) {
        let users = self.members.len() as u32;
        let Some(m) = self.members.get_mut(&conn) else {
            return;
        };
        let first_hello = matches!(c, Control::Hello { .. }) && !m.control;
        if !first_hello && m.controls.check().is_err() {
            return;
        }
        match c {
            Control::Hello { user } => {
                let first = !m.control;
                m.control = true;
                m.user = user.clone();
                let welcome = Control::Welcome {
                    connection: m.uuid.clone(),
                    role: m.role,
                    room: self.name.to_string(),
                    users,
                };
                let joined = Control::Joined {
                    connection: m.uuid.clone(),
                    user,
                    users,
                };
                self.queue_control(Target::One(conn), &welcome);
                if first {
                    self.queue_control(Target::ControlExcept(Some(conn)), &joined);
                }
            }
            Control::Typing { active, .. } => {
                let typing = Control::Typing {
                    connection: Some(m.uuid.clone()),
                    user: m.user.clone(),
                    active,
                };
                self.queue_control(Target::Hint(conn), &typing);
            }
            // Everything else is server → client only.
            _ => {}
        }
    }

    /// Sync step 2 for `conn`: what its state vector `sv` lacks, or the cached whole document.
    /// Nothing is encoded for a member whose outbox is already full.
    fn answer_step1(&mut self, conn: ConnId, sv: &[u8]) {
        if !self.reserve(conn, 0) {
            return;
        }
        let full_state = self.full_state.clone();
        let encoded = contain(|| {
            let sv = decode_state_vector(sv)?;
            if sv.is_empty() {
                if let Some(frame) = full_state {
                    return Ok::<_, String>((frame, true));
                }
            }
            let update = self.doc.transact().encode_state_as_update_v1(&sv);
            Ok((Bytes::from(encode_sync(SYNC_STEP2, &update)), sv.is_empty()))
        });
        match encoded {
            Ok(Ok((frame, whole))) => {
                // Encoding a large document takes milliseconds on the runtime thread this room
                // shares; joiners with nothing (every new tab, and every reconnect of a client
                // that lost its state) all get the same bytes.
                if whole {
                    self.full_state = Some(frame.clone());
                }
                if self.reserve(conn, frame.len()) {
                    self.queued.push((Target::One(conn), frame));
                }
            }
            Ok(Err(e)) => self.close_member(
                conn,
                CloseCode::InvalidData,
                &format!("invalid state vector: {e}"),
            ),
            Err(_) => self.poisoned(conn, sv, "encoding the document for sync step 2"),
        }
    }
}
