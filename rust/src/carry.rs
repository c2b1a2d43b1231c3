//! What the two directions of the data plane share: the outcome of one socket read
//! ([`Fed`], with its [`Report`]) and the one method a plane that drives both calls
//! ([`Carry::feed`]).
//!
//! - TTS (`crate::relay::Relay`): the source is the upstream (a client-side
//!   connection), the sink the client; provider audio in, `audio_chunk` frames out.
//! - STT (`crate::uplink::Uplink`): the source is the client (a server-side
//!   connection), the sink the upstream; client audio in, the provider's audio
//!   messages out (masked, as a client's must be).
//!
//! Either way `feed` parses one read with the source's framing, converts every
//! message it owns, frames the results for the sink into `wire`, and stops at the
//! first message it does not own: that one and everything after it stay queued in
//! the source's framing, in order, for the control plane.

use crate::ws::WsConnection;
use crate::Result;

/// What one call carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Source messages taken (owned).
    pub messages: usize,
    /// Bytes of source audio taken (provider audio for TTS, client audio for STT).
    pub in_bytes: usize,
    /// Bytes of converted audio made: client audio (resampled, encoded) handed to the
    /// chunker for TTS; audio in the model's rate and format for STT.
    pub out_bytes: usize,
    /// Messages framed for the sink: `audio_chunk` frames (TTS) or the provider's
    /// audio messages (STT).
    pub chunks: usize,
    /// TTS: the sequence number the next `audio_chunk` will carry; STT: 0.
    pub next_sequence: u64,
}

impl std::ops::AddAssign for Report {
    /// What two calls carried together (the later call's next sequence number).
    fn add_assign(&mut self, later: Report) {
        self.messages += later.messages;
        self.in_bytes += later.in_bytes;
        self.out_bytes += later.out_bytes;
        self.chunks += later.chunks;
        self.next_sequence = later.next_sequence;
    }
}

/// The outcome of one [`Carry::feed`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fed {
    pub report: Report,
    /// A message the state does not own is the next event of the source's framing:
    /// the stream is back with the control plane.
    pub handed_back: bool,
}

/// One direction of one stream on the data plane.
pub trait Carry {
    /// Parse `data` read from `source`, carry what this state owns to `sink` as wire
    /// bytes appended to `wire`; see the module documentation.
    ///
    /// Errors: [`crate::Error::CloseSent`] if `sink` has sent its close frame (what
    /// was framed before is in `wire` and counted in nothing: the stream is over).
    fn feed(
        &mut self,
        source: &mut WsConnection,
        data: &[u8],
        sink: &mut WsConnection,
        wire: &mut Vec<u8>,
    ) -> Result<Fed>;
}

/// Feed `data` read in two parts, cut at `cut`, as the plane would: once the state
/// hands the stream back, the rest goes to the source's framing for the session.
/// Returns the wire bytes, what the calls carried together, and whether it was
/// handed back.
#[cfg(test)]
pub(crate) fn feed_cut(
    state: &mut dyn Carry,
    source: &mut WsConnection,
    data: &[u8],
    cut: usize,
    sink: &mut WsConnection,
) -> (Vec<u8>, Report, bool) {
    let mut wire = Vec::new();
    let mut report = Report::default();
    let mut handed_back = false;
    for part in [&data[..cut], &data[cut..]] {
        if handed_back {
            source.receive_data(part); // the session reads the rest
            break;
        }
        let fed = state.feed(source, part, sink, &mut wire).unwrap();
        report += fed.report;
        handed_back = fed.handed_back;
    }
    (wire, report, handed_back)
}

/// Bytes that look like noise, the same for the same seed (xorshift).
#[cfg(test)]
pub(crate) fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}
