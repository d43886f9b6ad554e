//! A real room driven in-process, for the micro-benchmarks in `server/benches/room.rs`
//! (feature `bench-internals`, which the benches turn on through this crate's dev-dependency on
//! itself; `cargo build` never compiles it).
//!
//! [`BenchRoom`] is the room actor's code without its task: commands go straight to the room's
//! command handling and each batch ends as the actor ends it, so what a bench times is the
//! room's own work (apply, store append, encode once, fan-out) without a mailbox hop. Members
//! are queues with no socket behind them. Durability is relaxed and the committer never flushes
//! on its own timer, so no fsync lands inside a measurement; the store lives in a temporary
//! directory (on tmpfs when there is one).

use tokio::sync::{mpsc, oneshot};
use weft_protocol::{Message, Role};
use yrs::{GetString, ReadTxn, Transact};

use crate::config::Durability;
use crate::outbox::Data;
use crate::room::Command;
use crate::testing::fuzzing::{detached_joiner, DirectRoom};

/// A member of a [`BenchRoom`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberId(u64);

/// What members were sent since they were last drained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Frames.
    pub frames: usize,
    /// Their bytes, all together.
    pub bytes: usize,
}

/// A room on an empty document of its own, and its members' queues.
pub struct BenchRoom {
    direct: DirectRoom,
    /// Each member's queue: what its socket writer would send.
    members: Vec<(MemberId, mpsc::Receiver<Data>)>,
    next_id: u64,
}

impl BenchRoom {
    /// Loads an empty document, relaxed durability, every other setting at its default.
    pub fn open() -> Self {
        Self {
            direct: DirectRoom::open("bench", |c| c.durability = Durability::Relaxed),
            members: Vec::new(),
            next_id: 1,
        }
    }

    /// Admits a member that may write; its first frame (the room's sync step 1) is queued at
    /// the end of the batch.
    pub fn join(&mut self) -> MemberId {
        let id = MemberId(self.next_id);
        self.next_id += 1;
        let queue = self.direct.ctx.config.send_queue;
        let (joiner, rx) = detached_joiner(id.0, Role::Write, queue);
        let (reply, _) = oneshot::channel();
        self.direct.room.handle(Command::Join(joiner, reply));
        self.members.push((id, rx));
        id
    }

    /// Removes a member, as its socket ending does.
    pub fn leave(&mut self, member: MemberId) {
        self.members.retain(|(id, _)| *id != member);
        self.direct.room.handle(Command::Leave(member.0));
    }

    /// Hands the room one frame's messages from `member`, as its connection does.
    pub fn send(&mut self, member: MemberId, messages: Vec<Message>) {
        self.direct
            .room
            .handle(Command::Messages(member.0, messages));
    }

    /// Ends the batch as the actor does: the writes are noted for the next flush, then every
    /// frame the batch produced is queued for its members.
    pub fn finish_batch(&mut self) {
        let DirectRoom { rt, room, .. } = &mut self.direct;
        rt.block_on(room.finish_batch());
    }

    /// Sends the awareness changes the room holds back for its next awareness tick, as the
    /// actor does when the tick passes, and ends the batch.
    pub fn awareness_tick(&mut self) {
        let DirectRoom { rt, room, .. } = &mut self.direct;
        room.send_awareness_tick();
        rt.block_on(room.finish_batch());
    }

    /// Takes every frame waiting for `member`.
    pub fn drain(&mut self, member: MemberId) -> Delivered {
        let mut got = Delivered::default();
        for (id, rx) in &mut self.members {
            if *id == member {
                take(rx, &mut got);
            }
        }
        got
    }

    /// Takes every frame waiting for any member.
    pub fn drain_all(&mut self) -> Delivered {
        let mut got = Delivered::default();
        for (_, rx) in &mut self.members {
            take(rx, &mut got);
        }
        got
    }

    /// The document's text.
    pub fn text(&self) -> String {
        let doc = self.direct.room.doc();
        let txn = doc.transact();
        txn.get_text("content")
            .map(|t| t.get_string(&txn))
            .unwrap_or_default()
    }
}

/// Empties one member's queue into `got`.
fn take(rx: &mut mpsc::Receiver<Data>, got: &mut Delivered) {
    while let Ok(data) = rx.try_recv() {
        got.frames += 1;
        got.bytes += match data {
            Data::Binary(b) => b.len(),
            Data::Text(t) => t.len(),
        };
    }
}

/// Plans `PUT /api/docs/{id}/text`'s rewrite of `old` into `new` exactly as the server does off
/// the room (the blocking thread's budget); returns how many splices the plan has.
pub fn plan_put_text(old: &str, new: &str) -> usize {
    use crate::room::diff::{plan, Budget};
    plan(old, new, Budget::Blocking).len()
}
