//! The echo [`Handler`]: every data message goes back as it came, text as text and binary as
//! binary. It is what the WebSocket conformance run (Autobahn cases via kosoku, the `weft-echo`
//! test binary) talks to, so that run exercises the production socket loop, limits and upgrade
//! settings without a room or a store.

use crate::net::socket::{Handler, Progress};
use crate::outbox::{Data, Ending, Outbox};

/// Echoes through the connection's own bounded queue, so a peer that does not read its echoes
/// meets the same 1013 as a slow room member.
#[derive(Default)]
pub(crate) struct Echo {
    outbox: Option<Outbox>,
}

impl Handler for Echo {
    async fn open(&mut self, outbox: Outbox) -> Result<(), Ending> {
        self.outbox = Some(outbox);
        Ok(())
    }

    async fn message(&mut self, data: Data) -> Result<Progress, Ending> {
        if let Some(outbox) = &self.outbox {
            // A full queue has already asked the socket to close with 1013.
            outbox.send_data(data);
        }
        Ok(Progress::Continue)
    }

    async fn closed(&mut self) {
        self.outbox = None;
    }
}
