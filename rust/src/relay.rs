//! The data plane of a TTS stream: provider audio in, `audio_chunk` frames out.
//!
//! A [`Relay`] is one stream's output state, built from a [`RelaySpec`]: the
//! provider's audio format, the client's codec and rate, the chunk size, the
//! `context_id` and the next sequence number. It has two inputs that run the same
//! conversion on the same state, so whichever plane carries a message the client
//! gets the same bytes:
//!
//! - [`Relay::push_audio`]: one piece of provider audio that the control plane (the
//!   session, in Python) decoded itself;
//! - [`Relay::feed`]: bytes read from the upstream's socket. It parses them with the
//!   upstream's framing, converts every message it owns (steady-state audio in the
//!   spec's input framing) and frames the chunks for the client's socket, and
//!   stops at the first message it does not own: that message, and everything
//!   after it, stays queued in the upstream's framing, in order, for the control
//!   plane. A [`Report`] says what went through, so the session keeps its counts.
//!
//! Resampling (`crate::resample`), G.711 (`crate::codec`) and chunking
//! (`crate::chunker`) are the core's own; this module only composes them.

use std::borrow::Cow;
use std::convert::Infallible;

use base64_simd::STANDARD;
use serde_json::Value;

use crate::buf::extend_with;
use crate::carry::Carry;
pub use crate::carry::{Fed, Report};
use crate::chunker::Chunker;
use crate::codec::{pcm16_to_alaw, pcm16_to_mulaw};
use crate::resample::{Resampler, SampleFormat};
use crate::ws::{Event, WsConnection};
use crate::{scratch, Error, Result};

/// How the upstream's audio messages are framed (the messages the relay owns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Every binary message is raw audio in the spec's input format, and nothing
    /// else (the SLNG model servers, Deepgram).
    Binary,
    /// ElevenLabs' multi-context JSON: a text message is owned when it is nothing
    /// but base64 audio (a whole number of PCM16 samples) of `context_id`, not its
    /// last (`isFinal`) and no error; its alignment, if any, is not looked at (the
    /// session lends such a stream only when it sends no word timestamps).
    ElevenLabs { context_id: String },
    /// Cartesia's JSON: a text message is owned when it is a `chunk` of `context_id`
    /// whose `data` is valid base64 audio (PCM16, any length).
    Cartesia { context_id: String },
    /// moshi-server's TTS MessagePack (Kyutai): a binary message is owned when it is
    /// exactly `{"type":"Audio","pcm":[...]}`, at least one sample, every sample a
    /// float32 (marker `0xca`, as moshi-server writes them); its audio is those
    /// samples as float32 little-endian (the spec's `in_format` must be `f32`).
    Kyutai,
}

impl Framing {
    pub const NAMES: &'static [&'static str] = &["binary", "elevenlabs", "cartesia", "kyutai"];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Binary => "binary",
            Self::ElevenLabs { .. } => "elevenlabs",
            Self::Cartesia { .. } => "cartesia",
            Self::Kyutai => "kyutai",
        }
    }

    /// `context_id` is the utterance's on the provider, for the framings that have one.
    pub fn parse(name: &str, context_id: Option<&str>) -> Result<Self> {
        match (name, context_id) {
            ("binary", None) => Ok(Self::Binary),
            ("kyutai", None) => Ok(Self::Kyutai),
            ("elevenlabs", Some(id)) => Ok(Self::ElevenLabs {
                context_id: id.to_owned(),
            }),
            ("cartesia", Some(id)) => Ok(Self::Cartesia {
                context_id: id.to_owned(),
            }),
            ("binary" | "elevenlabs" | "cartesia" | "kyutai", _) => {
                Err(Error::InvalidArgument(format!(
                    "relay framing {name:?} {} a context_id",
                    if matches!(name, "binary" | "kyutai") {
                        "takes no"
                    } else {
                        "needs"
                    }
                )))
            }
            _ => Err(Error::InvalidArgument(format!(
                "unknown relay framing {name:?}; expected one of {:?}",
                Self::NAMES
            ))),
        }
    }

    /// Kyutai's audio is float32 whatever the spec says; the others' is the spec's.
    fn check_format(&self, format: SampleFormat) -> Result<()> {
        if matches!(self, Self::Kyutai) && format != SampleFormat::F32 {
            return Err(Error::InvalidArgument(format!(
                "relay framing \"kyutai\" carries float32 audio, not {format:?}"
            )));
        }
        Ok(())
    }

    /// The audio of `event` if this framing owns it; None leaves it to the session.
    fn owned_audio<'e>(&self, event: &'e Event) -> Option<Cow<'e, [u8]>> {
        match (self, event) {
            (Self::Binary, Event::Binary(audio)) => Some(Cow::Borrowed(audio)),
            (Self::ElevenLabs { context_id }, Event::Text(text)) => {
                elevenlabs_audio(text, context_id).map(Cow::Owned)
            }
            (Self::Cartesia { context_id }, Event::Text(text)) => {
                cartesia_audio(text, context_id).map(Cow::Owned)
            }
            (Self::Kyutai, Event::Binary(message)) => kyutai_audio(message).map(Cow::Owned),
            _ => None,
        }
    }
}

/// The float32 little-endian samples of a moshi-server `Audio` message that is
/// nothing else; None for anything the session must see (`Text`, `Error`, a message
/// with more fields, samples in another encoding, bytes after the message).
fn kyutai_audio(message: &[u8]) -> Option<Vec<u8>> {
    /// `message[at..]` starts with the MessagePack string `text`: the position after it.
    fn str_at(message: &[u8], at: usize, text: &str) -> Option<usize> {
        let n = text.len();
        debug_assert!(n < 32, "fixstr only");
        let end = at + 1 + n;
        (message.get(at) == Some(&(0xa0 | n as u8)) && message.get(at + 1..end)? == text.as_bytes())
            .then_some(end)
    }
    /// The array header at `at`: its length and the position of its first item.
    fn array_at(message: &[u8], at: usize) -> Option<(usize, usize)> {
        let be = |n: usize| -> Option<usize> {
            let bytes = message.get(at + 1..at + 1 + n)?;
            Some(bytes.iter().fold(0usize, |len, &b| len << 8 | b as usize))
        };
        match *message.get(at)? {
            b @ 0x90..=0x9f => Some(((b & 0x0f) as usize, at + 1)),
            0xdc => Some((be(2)?, at + 3)),
            0xdd => Some((be(4)?, at + 5)),
            _ => None,
        }
    }
    if message.first() != Some(&0x82) {
        return None; // a map of exactly two entries
    }
    // moshi-server writes `type` first; another order goes to the session.
    let pcm_at = str_at(
        message,
        str_at(message, str_at(message, 1, "type")?, "Audio")?,
        "pcm",
    )?;
    let (len, first) = array_at(message, pcm_at)?;
    if message.len().checked_sub(first)? != len.checked_mul(5)? {
        return None; // not only float32 samples, or bytes after them
    }
    f32_samples(&message[first..])
}

/// `0xca` + big-endian float32, repeated, as float32 little-endian; None if empty or
/// any item is not a float32.
fn f32_samples(items: &[u8]) -> Option<Vec<u8>> {
    if items.is_empty() || items.len() % 5 != 0 {
        return None;
    }
    let mut pcm = Vec::with_capacity(items.len() / 5 * 4);
    for item in items.chunks_exact(5) {
        if item[0] != 0xca {
            return None;
        }
        pcm.extend_from_slice(&[item[4], item[3], item[2], item[1]]);
    }
    Some(pcm)
}

/// The PCM16 of a Cartesia `chunk` of `context_id`; None for anything else.
fn cartesia_audio(text: &str, context_id: &str) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_str(text).ok()?;
    let message = value.as_object()?;
    if message.get("type")?.as_str()? != "chunk"
        || message.get("context_id")?.as_str()? != context_id
    {
        return None;
    }
    let pcm = STANDARD
        .decode_to_vec(message.get("data")?.as_str()?)
        .ok()?;
    (!pcm.is_empty()).then_some(pcm)
}

/// The PCM16 of an ElevenLabs message that is only audio of `context_id`; None for
/// anything the session must see (it decides what a doubtful message means).
fn elevenlabs_audio(text: &str, context_id: &str) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_str(text).ok()?;
    let message = value.as_object()?;
    let is_false = |key: &str| {
        matches!(
            message.get(key),
            None | Some(Value::Null | Value::Bool(false))
        )
    };
    if !is_false("isFinal") || !is_false("is_final") || !is_false("error") {
        return None;
    }
    let context = match message.get("contextId") {
        Some(id) => id,
        None => message.get("context_id")?,
    };
    if context.as_str() != Some(context_id) {
        return None;
    }
    let audio = message.get("audio")?.as_str()?;
    let pcm = STANDARD.decode_to_vec(audio).ok()?;
    // Half a sample is carried by the dialect from one message to the next.
    (!pcm.is_empty() && pcm.len() % 2 == 0).then_some(pcm)
}

/// The client's codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcm16,
    Mulaw,
    Alaw,
}

impl Codec {
    pub const NAMES: &'static [&'static str] = &["pcm16", "mulaw", "alaw"];

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "pcm16" => Ok(Self::Pcm16),
            "mulaw" => Ok(Self::Mulaw),
            "alaw" => Ok(Self::Alaw),
            _ => Err(Error::UnsupportedFormat {
                name: name.to_owned(),
                expected: Self::NAMES,
            }),
        }
    }

    /// Bytes per sample on the client's side.
    pub fn width(self) -> usize {
        match self {
            Self::Pcm16 => 2,
            Self::Mulaw | Self::Alaw => 1,
        }
    }
}

/// What a stream's relay is built from.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    pub framing: Framing,
    pub in_rate: u32,
    pub in_format: SampleFormat,
    pub codec: Codec,
    pub out_rate: u32,
    pub max_chunk_bytes: usize,
    pub context_id: String,
    pub next_sequence: u64,
}

/// One stream's conversion and framing state; see the module documentation.
pub struct Relay {
    framing: Framing,
    in_rate: u32,
    in_format: SampleFormat,
    codec: Codec,
    /// None when the provider's audio is already the client's (PCM16 at its rate).
    resampler: Option<Resampler>,
    chunker: Chunker,
}

impl Relay {
    /// Errors: an unsupported rate or format, a framing whose audio is in another
    /// format, a chunk size that holds no sample.
    pub fn new(spec: RelaySpec) -> Result<Self> {
        spec.framing.check_format(spec.in_format)?;
        let direct = spec.codec == Codec::Pcm16
            && spec.in_format == SampleFormat::Pcm16
            && spec.in_rate == spec.out_rate;
        let resampler = if direct {
            None
        } else {
            Some(Resampler::new(
                spec.in_rate,
                spec.out_rate,
                spec.in_format,
                SampleFormat::Pcm16,
            )?)
        };
        let mut chunker = Chunker::new(
            spec.max_chunk_bytes,
            spec.codec.width(),
            spec.out_rate,
            spec.context_id,
        )?;
        chunker.set_next_sequence(spec.next_sequence);
        Ok(Self {
            framing: spec.framing,
            in_rate: spec.in_rate,
            in_format: spec.in_format,
            codec: spec.codec,
            resampler,
            chunker,
        })
    }

    pub fn framing(&self) -> &Framing {
        &self.framing
    }

    /// Change which messages `feed` owns; the conversion state stays as it is.
    /// Errors: the framing's audio is not in this relay's format.
    pub fn set_framing(&mut self, framing: Framing) -> Result<()> {
        framing.check_format(self.in_format)?;
        self.framing = framing;
        Ok(())
    }

    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    pub fn in_format(&self) -> SampleFormat {
        self.in_format
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn next_sequence(&self) -> u64 {
        self.chunker.next_sequence()
    }

    /// One piece of provider audio: its `audio_chunk` frames (UTF-8 JSON) go to
    /// `emit`, in order. Returns the bytes of client audio it made.
    pub fn push_audio<F>(&mut self, audio: &[u8], mut emit: F) -> Result<usize>
    where
        F: FnMut(&[u8]) -> Result<()>,
    {
        match self.resampler.as_mut() {
            None => self.frames(audio, &mut emit),
            Some(resampler) => {
                let mut pcm = scratch::bytes();
                resampler.process(audio, &mut pcm);
                self.encoded_frames(&pcm, &mut emit)
            }
        }
    }

    /// The end of an utterance: the audio the resampler holds back, as frames; a
    /// trailing partial sample is dropped. Returns the bytes of client audio made.
    pub fn end_utterance<F>(&mut self, mut emit: F) -> Result<usize>
    where
        F: FnMut(&[u8]) -> Result<()>,
    {
        let mut made = 0;
        if let Some(resampler) = self.resampler.as_mut() {
            let mut pcm = scratch::bytes();
            resampler.flush(&mut pcm);
            made = self.encoded_frames(&pcm, &mut emit)?;
        }
        self.chunker.flush();
        Ok(made)
    }

    /// Forget the audio in flight (the utterance was stopped).
    pub fn drop_audio(&mut self) {
        if let Some(resampler) = self.resampler.as_mut() {
            resampler.reset();
        }
        self.chunker.flush();
    }

    /// Encode resampled PCM16 for the client, then frame it.
    fn encoded_frames<F>(&mut self, pcm: &[u8], emit: &mut F) -> Result<usize>
    where
        F: FnMut(&[u8]) -> Result<()>,
    {
        match self.codec {
            Codec::Pcm16 => self.frames(pcm, emit),
            Codec::Mulaw => self.frames(&pcm16_to_mulaw(pcm)?, emit),
            Codec::Alaw => self.frames(&pcm16_to_alaw(pcm)?, emit),
        }
    }

    fn frames<F>(&mut self, data: &[u8], emit: &mut F) -> Result<usize>
    where
        F: FnMut(&[u8]) -> Result<()>,
    {
        let mut json = scratch::bytes();
        let chunks = self.chunker.push(data);
        let mut result = Ok(data.len());
        for chunk in chunks {
            let frame = self.chunker.frame(&chunk);
            json.clear();
            extend_with(&mut json, frame.len(), |dst| {
                Ok::<_, Infallible>(frame.write_into(dst))
            })
            .unwrap_or_else(|never| match never {});
            if let Err(err) = emit(&json) {
                result = Err(err);
                break;
            }
        }
        result
    }
}

impl Carry for Relay {
    /// Parse `data` read from the upstream and relay the messages this relay owns
    /// as text frames for `client`, appended to `wire`; see the module docs.
    ///
    /// Errors: [`Error::CloseSent`] if `client` has sent its close frame (the
    /// messages already framed are in `wire` and counted in nothing: the stream
    /// is over).
    fn feed(
        &mut self,
        upstream: &mut WsConnection,
        data: &[u8],
        client: &mut WsConnection,
        wire: &mut Vec<u8>,
    ) -> Result<Fed> {
        upstream.receive_data(data);
        let mut report = Report::default();
        let mut handed_back = false;
        while let Some(event) = upstream.next_event() {
            let Some(audio) = self.framing.owned_audio(&event) else {
                upstream.put_back(event);
                handed_back = true;
                break;
            };
            report.messages += 1;
            report.in_bytes += audio.len();
            let mut chunks = 0;
            report.out_bytes += self.push_audio(&audio, |frame| {
                chunks += 1;
                wire.extend_from_slice(&client.send_text_trusted(frame)?);
                Ok(())
            })?;
            report.chunks += chunks;
        }
        report.next_sequence = self.chunker.next_sequence();
        Ok(Fed {
            report,
            handed_back,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carry::{feed_cut, noise};
    use crate::ws::encode_frame;

    fn spec(codec: Codec, in_rate: u32, out_rate: u32, max_chunk: usize) -> RelaySpec {
        RelaySpec {
            framing: Framing::Binary,
            in_rate,
            in_format: SampleFormat::Pcm16,
            codec,
            out_rate,
            max_chunk_bytes: max_chunk,
            context_id: "ctx".into(),
            next_sequence: 0,
        }
    }

    fn server_frames(messages: &[(u8, &[u8])]) -> Vec<u8> {
        messages
            .iter()
            .flat_map(|(op, payload)| encode_frame(*op, payload, true, None))
            .collect()
    }

    /// The frames `push_audio` makes for `pieces`, as the client's wire bytes.
    fn by_hand(spec: RelaySpec, pieces: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut relay = Relay::new(spec).unwrap();
        let mut client = WsConnection::new(1 << 22);
        let mut wire = Vec::new();
        let mut made = 0;
        for piece in pieces {
            made += relay
                .push_audio(piece, |f| {
                    wire.extend(client.send_text(std::str::from_utf8(f).unwrap())?);
                    Ok(())
                })
                .unwrap();
        }
        (wire, made)
    }

    #[test]
    fn feed_matches_push_audio_for_every_codec_and_rate() {
        let a = noise(1920, 1);
        let b = noise(3333, 2);
        for (codec, in_rate, out_rate) in [
            (Codec::Pcm16, 24000, 24000),
            (Codec::Pcm16, 24000, 16000),
            (Codec::Mulaw, 24000, 8000),
            (Codec::Alaw, 22050, 8000),
            (Codec::Mulaw, 16000, 16000),
        ] {
            let s = spec(codec, in_rate, out_rate, 640);
            let mut relay = Relay::new(s.clone()).unwrap();
            let mut upstream = WsConnection::new_client(1 << 22);
            let mut client = WsConnection::new(1 << 22);
            let mut wire = Vec::new();
            let data = server_frames(&[(2, &a), (2, &b)]);
            let fed = relay
                .feed(&mut upstream, &data, &mut client, &mut wire)
                .unwrap();
            let (expected, made) = by_hand(s, &[&a, &b]);
            assert_eq!(wire, expected, "{codec:?} {in_rate}->{out_rate}");
            assert!(!fed.handed_back);
            assert_eq!(fed.report.messages, 2);
            assert_eq!(fed.report.in_bytes, a.len() + b.len());
            assert_eq!(fed.report.out_bytes, made);
            assert_eq!(fed.report.next_sequence, fed.report.chunks as u64);
        }
    }

    #[test]
    fn stops_at_the_first_message_it_does_not_own() {
        let a = noise(960, 3);
        let b = noise(960, 4);
        let data = server_frames(&[(2, &a), (1, b"{\"type\":\"flushed\"}"), (2, &b), (9, b"hi")]);
        let mut relay = Relay::new(spec(Codec::Pcm16, 24000, 24000, 4800)).unwrap();
        let mut upstream = WsConnection::new_client(1 << 22);
        let mut client = WsConnection::new(1 << 22);
        let mut wire = Vec::new();
        let fed = relay
            .feed(&mut upstream, &data, &mut client, &mut wire)
            .unwrap();
        assert!(fed.handed_back);
        assert_eq!(fed.report.messages, 1);
        assert_eq!(fed.report.in_bytes, a.len());
        let (expected, _) = by_hand(spec(Codec::Pcm16, 24000, 24000, 4800), &[&a]);
        assert_eq!(wire, expected);
        // What it does not own is left in order for the control plane.
        assert_eq!(
            upstream.events(),
            vec![
                Event::Text("{\"type\":\"flushed\"}".into()),
                Event::Binary(b.clone()),
                Event::Ping(b"hi".to_vec()),
            ]
        );
    }

    #[test]
    fn a_frame_split_across_reads_and_the_sequence_goes_on() {
        let pcm = noise(4000, 5);
        let data = server_frames(&[(2, &pcm)]);
        let mut s = spec(Codec::Pcm16, 24000, 24000, 4800);
        s.next_sequence = 7;
        let mut relay = Relay::new(s.clone()).unwrap();
        let mut upstream = WsConnection::new_client(1 << 22);
        let mut client = WsConnection::new(1 << 22);
        let mut wire = Vec::new();
        let first = relay
            .feed(&mut upstream, &data[..1000], &mut client, &mut wire)
            .unwrap();
        assert_eq!(first.report.messages, 0);
        assert!(wire.is_empty() && !first.handed_back);
        let second = relay
            .feed(&mut upstream, &data[1000..], &mut client, &mut wire)
            .unwrap();
        assert_eq!(second.report.in_bytes, pcm.len());
        assert_eq!(second.report.next_sequence, 8);
        assert_eq!(wire, by_hand(s, &[&pcm]).0);
    }

    #[test]
    fn after_the_clients_close_it_refuses() {
        let mut relay = Relay::new(spec(Codec::Pcm16, 24000, 24000, 4800)).unwrap();
        let mut upstream = WsConnection::new_client(1 << 22);
        let mut client = WsConnection::new(1 << 22);
        client.send_close(Some(1000), "").unwrap();
        let data = server_frames(&[(2, &[0, 0])]);
        let err = relay
            .feed(&mut upstream, &data, &mut client, &mut Vec::new())
            .unwrap_err();
        assert_eq!(err, Error::CloseSent);
    }

    #[test]
    fn end_utterance_flushes_the_resampler_and_drop_forgets() {
        let pcm = noise(4800, 6);
        let mut relay = Relay::new(spec(Codec::Mulaw, 24000, 8000, 320)).unwrap();
        let mut frames = 0;
        relay.push_audio(&pcm, |_| Ok(())).unwrap();
        let tail = relay
            .end_utterance(|_| {
                frames += 1;
                Ok(())
            })
            .unwrap();
        assert!(tail > 0 && frames > 0);
        // A fresh utterance after a drop starts as a fresh relay would.
        relay.push_audio(&pcm, |_| Ok(())).unwrap();
        relay.drop_audio();
        let mut fresh = Relay::new(spec(Codec::Mulaw, 24000, 8000, 320)).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let strip = |f: &[u8]| -> Vec<u8> {
            let text = std::str::from_utf8(f).unwrap();
            text.as_bytes()[..text.find("\"sequence\"").unwrap()].to_vec()
        };
        relay
            .push_audio(&pcm, |f| {
                a.push(strip(f));
                Ok(())
            })
            .unwrap();
        fresh
            .push_audio(&pcm, |f| {
                b.push(strip(f));
                Ok(())
            })
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn elevenlabs_audio_of_the_context_is_owned_and_nothing_else() {
        let pcm = noise(960, 8);
        let b64 = STANDARD.encode_to_string(&pcm);
        let owned = [
            format!(
                r#"{{"audio":"{b64}","isFinal":null,"contextId":"u1","alignment":{{"chars":["a"]}}}}"#
            ),
            format!(r#"{{"audio":"{b64}","context_id":"u1","isFinal":false}}"#),
        ];
        let not_owned = [
            format!(r#"{{"audio":"{b64}","isFinal":true,"contextId":"u1"}}"#),
            format!(r#"{{"audio":"{b64}","contextId":"u2"}}"#),
            format!(r#"{{"audio":"{b64}"}}"#),
            format!(r#"{{"audio":"{b64}","contextId":"u1","error":"quota"}}"#),
            r#"{"audio":"AAE","contextId":"u1"}"#.to_owned(), // no padding
            r#"{"audio":"AA==","contextId":"u1"}"#.to_owned(), // half a sample
            r#"{"audio":"","contextId":"u1"}"#.to_owned(),
            r#"{"message":"bad","contextId":"u1"}"#.to_owned(),
            r#"["audio"]"#.to_owned(),
            "not json".to_owned(),
        ];
        let framing = Framing::parse("elevenlabs", Some("u1")).unwrap();
        for text in &owned {
            let event = Event::Text(text.clone());
            assert_eq!(
                framing.owned_audio(&event).as_deref(),
                Some(&pcm[..]),
                "{text}"
            );
        }
        for text in &not_owned {
            assert!(
                framing.owned_audio(&Event::Text(text.clone())).is_none(),
                "{text}"
            );
        }
        assert!(framing.owned_audio(&Event::Binary(pcm.clone())).is_none());
        assert!(Framing::parse("elevenlabs", None).is_err());
        assert!(Framing::parse("binary", Some("u1")).is_err());
    }

    #[test]
    fn cartesia_chunks_of_the_context_are_owned_and_nothing_else() {
        let pcm = noise(961, 9);
        let b64 = STANDARD.encode_to_string(&pcm);
        let framing = Framing::parse("cartesia", Some("c1")).unwrap();
        let owned = format!(
            r#"{{"type":"chunk","data":"{b64}","done":false,"status_code":206,"context_id":"c1"}}"#
        );
        assert_eq!(
            framing.owned_audio(&Event::Text(owned)).as_deref(),
            Some(&pcm[..])
        );
        for text in [
            format!(r#"{{"type":"chunk","data":"{b64}","context_id":"c2"}}"#),
            format!(r#"{{"type":"timestamps","data":"{b64}","context_id":"c1"}}"#),
            r#"{"type":"chunk","data":"A","context_id":"c1"}"#.to_owned(),
            r#"{"type":"chunk","data":"","context_id":"c1"}"#.to_owned(),
            r#"{"type":"done","context_id":"c1"}"#.to_owned(),
        ] {
            assert!(
                framing.owned_audio(&Event::Text(text.clone())).is_none(),
                "{text}"
            );
        }
    }

    /// `n` float32 samples in [-1, 1), little-endian.
    fn float_pcm(n: usize, seed: u32) -> Vec<u8> {
        noise(n * 2, seed)
            .chunks_exact(2)
            .flat_map(|b| (i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0).to_le_bytes())
            .collect()
    }

    fn kyutai_spec(codec: Codec, out_rate: u32, max_chunk: usize) -> RelaySpec {
        RelaySpec {
            framing: Framing::Kyutai,
            in_format: SampleFormat::F32,
            ..spec(codec, 24000, out_rate, max_chunk)
        }
    }

    fn msgpack_map(entries: &[(&str, crate::msgpack::Value)]) -> Vec<u8> {
        use crate::msgpack::{Encoder, Value};
        let mut enc = Encoder::new();
        let map = Value::Map(
            entries
                .iter()
                .map(|(k, v)| (Value::Str((*k).into()), v.clone()))
                .collect(),
        );
        map.encode(&mut enc).unwrap();
        enc.into_bytes()
    }

    #[test]
    fn kyutai_audio_messages_are_owned_and_nothing_else() {
        use crate::msgpack::{kyutai_audio_frame, Value};
        let framing = Framing::parse("kyutai", None).unwrap();
        // fixarray, array16 and array32 headers.
        for samples in [1, 15, 1920, 70_000] {
            let pcm = float_pcm(samples, samples as u32);
            let message = kyutai_audio_frame(&pcm).unwrap();
            assert_eq!(
                framing.owned_audio(&Event::Binary(message)).as_deref(),
                Some(&pcm[..]),
                "{samples} samples"
            );
        }
        let audio = kyutai_audio_frame(&float_pcm(4, 1)).unwrap();
        let floats = |items: Vec<Value>| Value::Array(items);
        let str_ = |s: &str| Value::Str(s.into());
        let mut not_owned = vec![
            kyutai_audio_frame(&[]).unwrap(),
            msgpack_map(&[
                ("type", str_("Text")),
                ("text", str_("hi")),
                ("start_s", Value::F64(0.0)),
                ("stop_s", Value::F64(0.2)),
            ]),
            msgpack_map(&[("type", str_("Error")), ("message", str_("no"))]),
            msgpack_map(&[("type", str_("Ready"))]),
            msgpack_map(&[
                ("type", str_("Audio")),
                ("pcm", floats(vec![Value::F64(0.5)])),
            ]),
            msgpack_map(&[
                ("type", str_("Audio")),
                ("pcm", floats(vec![Value::Int(0)])),
            ]),
            msgpack_map(&[
                ("type", str_("Audio")),
                ("pcm", floats(vec![Value::F32(0.5), Value::F64(0.5)])),
            ]),
            msgpack_map(&[
                ("pcm", floats(vec![Value::F32(0.5)])),
                ("type", str_("Audio")),
            ]),
            msgpack_map(&[
                ("type", str_("Audio")),
                ("pcm", floats(vec![Value::F32(0.5)])),
                ("extra", Value::Nil),
            ]),
            msgpack_map(&[("type", str_("Audio")), ("pcm", Value::Bin(vec![0; 8]))]),
            msgpack_map(&[("type", str_("Audio"))]),
            [audio.clone(), vec![0xc0]].concat(), // a byte after the message
            audio[..audio.len() - 1].to_vec(),    // cut short
            Vec::new(),
        ];
        let mut wrong_length = audio.clone();
        wrong_length[16] += 1; // the fixarray's length: one sample more than there is
        not_owned.push(wrong_length);
        for message in &not_owned {
            assert!(
                framing
                    .owned_audio(&Event::Binary(message.clone()))
                    .is_none(),
                "{message:02x?}"
            );
        }
        assert_eq!(audio[16], 0x94, "the index above is the array header");
        assert!(framing.owned_audio(&Event::Text("{}".into())).is_none());
        assert!(Framing::parse("kyutai", Some("c1")).is_err());
        let pcm16 = spec(Codec::Pcm16, 24000, 24000, 4800);
        let mut relay = Relay::new(pcm16.clone()).unwrap();
        assert!(relay.set_framing(Framing::Kyutai).is_err());
        assert_eq!(relay.framing(), &Framing::Binary);
        let kyutai_pcm16 = RelaySpec {
            framing: Framing::Kyutai,
            ..pcm16
        };
        assert!(Relay::new(kyutai_pcm16).is_err());
    }

    #[test]
    fn kyutai_feed_matches_push_audio_cut_at_any_byte() {
        use crate::msgpack::kyutai_audio_frame;
        let (a, b, c) = (float_pcm(40, 11), float_pcm(57, 12), float_pcm(33, 13));
        let text = msgpack_map(&[("type", crate::msgpack::Value::Str("Text".into()))]);
        let data = server_frames(&[
            (2, &kyutai_audio_frame(&a).unwrap()),
            (2, &kyutai_audio_frame(&b).unwrap()),
            (2, &text),
            (2, &kyutai_audio_frame(&c).unwrap()),
        ]);
        for (codec, out_rate) in [(Codec::Pcm16, 24000), (Codec::Mulaw, 8000)] {
            let s = kyutai_spec(codec, out_rate, 16);
            let (expected, made) = by_hand(s.clone(), &[&a, &b]);
            assert!(!expected.is_empty());
            for cut in 0..=data.len() {
                let mut relay = Relay::new(s.clone()).unwrap();
                let mut upstream = WsConnection::new_client(1 << 22);
                let mut client = WsConnection::new(1 << 22);
                let (wire, report, handed_back) =
                    feed_cut(&mut relay, &mut upstream, &data, cut, &mut client);
                assert!(handed_back, "cut {cut}");
                assert_eq!(wire, expected, "{codec:?} cut {cut}");
                assert_eq!(report.messages, 2);
                assert_eq!(report.in_bytes, a.len() + b.len());
                assert_eq!(report.out_bytes, made);
                // The Text message and the audio after it wait, in order, for the session.
                assert_eq!(
                    upstream.events(),
                    vec![
                        Event::Binary(text.clone()),
                        Event::Binary(kyutai_audio_frame(&c).unwrap()),
                    ],
                    "cut {cut}"
                );
            }
        }
    }

    #[test]
    fn odd_bytes_wait_for_their_sample() {
        // One byte at a time gives the same frames as the whole piece, in every codec.
        let pcm = noise(101, 7);
        for codec in [Codec::Pcm16, Codec::Alaw] {
            let s = spec(codec, 16000, 16000, 64);
            let pieces: Vec<&[u8]> = pcm.chunks(1).collect();
            let whole = by_hand(s.clone(), &[&pcm]).0;
            let split = by_hand(s, &pieces).0;
            // Chunk boundaries differ: compare the audio they carry.
            assert_eq!(decoded_audio(&whole), decoded_audio(&split));
        }
    }

    fn decoded_audio(wire: &[u8]) -> Vec<u8> {
        let mut reader = WsConnection::new_client(1 << 22);
        reader.receive_data(wire);
        reader
            .events()
            .into_iter()
            .flat_map(|event| match event {
                Event::Text(text) => {
                    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                    base64_simd::STANDARD
                        .decode_to_vec(value["data"].as_str().unwrap())
                        .unwrap()
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }
}
