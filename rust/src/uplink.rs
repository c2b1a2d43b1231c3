//! The data plane of an STT stream: client audio in, the provider's audio messages out.
//!
//! An [`Uplink`] is one stream's input state, built from an [`UplinkSpec`]: the
//! client's codec and rate, the model's rate and sample format, how the provider
//! frames audio, and the largest audio message the client may send. Like
//! `crate::relay::Relay` it has two inputs over the same state, so whichever plane
//! carries a message the provider gets the same audio:
//!
//! - [`Uplink::push`]: one client audio message the control plane (the session)
//!   handles itself, converted to the model's rate and format (the session's dialect
//!   then frames it);
//! - [`Uplink::feed`] ([`Carry`]): bytes read from the client's socket. It parses them
//!   with the client's framing, converts every message it owns (a binary message no
//!   larger than the limit), frames the audio for the upstream's socket (masked), and
//!   stops at the first message it does not own (a command, a ping, an oversize
//!   message): that one and everything after it stay queued in the client's framing,
//!   in order, for the session. Its [`Report`] says what went through.
//!
//! G.711 (`crate::codec`), resampling (`crate::resample`) and Kyutai's MessagePack
//! (`crate::msgpack`) are the core's own; this module only composes them.

use crate::carry::{Carry, Fed, Report};
use crate::codec::{alaw_to_pcm16, mulaw_to_pcm16};
use crate::msgpack::{kyutai_audio_frame, KYUTAI_FRAME_SAMPLES};
use crate::relay::Codec;
use crate::resample::{Resampler, SampleFormat};
use crate::ws::{Event, WsConnection};
use crate::{scratch, Error, Result};

/// Bytes of one Kyutai audio message's samples (80 ms of float32 at 24 kHz).
const KYUTAI_FRAME_BYTES: usize = KYUTAI_FRAME_SAMPLES * 4;

/// How the provider takes audio (the messages the uplink writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkFraming {
    /// One binary message of the converted audio per client message that made any
    /// (the SLNG family and the built-in engines: PCM16; WhisperLive: float32).
    Binary,
    /// moshi-server's `{"type":"Audio","pcm":[...]}` of exactly
    /// [`KYUTAI_FRAME_SAMPLES`] float32 samples; less than that is held back until
    /// more comes (the model's format must be `f32`).
    Kyutai,
}

impl UplinkFraming {
    pub const NAMES: &'static [&'static str] = &["binary", "kyutai"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Binary => "binary",
            Self::Kyutai => "kyutai",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "binary" => Ok(Self::Binary),
            "kyutai" => Ok(Self::Kyutai),
            _ => Err(Error::InvalidArgument(format!(
                "unknown uplink framing {name:?}; expected one of {:?}",
                Self::NAMES
            ))),
        }
    }
}

/// What a stream's uplink is built from.
#[derive(Debug, Clone)]
pub struct UplinkSpec {
    pub framing: UplinkFraming,
    /// The client's audio, as the session accepted it at `start`.
    pub codec: Codec,
    pub in_rate: u32,
    /// The model's.
    pub out_rate: u32,
    pub out_format: SampleFormat,
    /// A binary message longer than this is not owned (the session refuses it).
    pub max_message_bytes: usize,
}

/// One stream's conversion and framing state; see the module documentation.
pub struct Uplink {
    framing: UplinkFraming,
    codec: Codec,
    resampler: Resampler,
    max_message: usize,
    /// Kyutai: converted audio short of a whole message.
    held: Vec<u8>,
}

impl Uplink {
    /// Errors: an unsupported rate or format; Kyutai framing of audio not float32.
    pub fn new(spec: UplinkSpec) -> Result<Self> {
        if spec.framing == UplinkFraming::Kyutai && spec.out_format != SampleFormat::F32 {
            return Err(Error::InvalidArgument(format!(
                "uplink framing \"kyutai\" carries float32 audio, not {:?}",
                spec.out_format
            )));
        }
        Ok(Self {
            framing: spec.framing,
            codec: spec.codec,
            resampler: Resampler::new(
                spec.in_rate,
                spec.out_rate,
                SampleFormat::Pcm16,
                spec.out_format,
            )?,
            max_message: spec.max_message_bytes,
            held: Vec::new(),
        })
    }

    pub fn framing(&self) -> UplinkFraming {
        self.framing
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn in_rate(&self) -> u32 {
        self.resampler.in_rate()
    }

    pub fn out_rate(&self) -> u32 {
        self.resampler.out_rate()
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message
    }

    /// Converted audio held back by the framing (Kyutai: less than one message).
    pub fn held(&self) -> &[u8] {
        &self.held
    }

    /// Replace what the framing holds back (the session's own framing held it while
    /// the stream was not lent). Errors: more than one message's worth, or a partial
    /// sample, for Kyutai; anything for a framing that holds nothing.
    pub fn set_held(&mut self, held: Vec<u8>) -> Result<()> {
        let fits = match self.framing {
            UplinkFraming::Binary => held.is_empty(),
            UplinkFraming::Kyutai => held.len() < KYUTAI_FRAME_BYTES && held.len() % 4 == 0,
        };
        if !fits {
            return Err(Error::InvalidArgument(format!(
                "{} bytes cannot be held back by the {:?} framing",
                held.len(),
                self.framing.name()
            )));
        }
        self.held = held;
        Ok(())
    }

    /// Take what the framing holds back, leaving nothing.
    pub fn take_held(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// One client audio message as the model's audio, appended to `out` (a partial
    /// sample waits for the next call).
    pub fn push(&mut self, audio: &[u8], out: &mut Vec<u8>) {
        match self.codec {
            Codec::Pcm16 => self.resampler.process(audio, out),
            Codec::Mulaw => self.resampler.process(&mulaw_to_pcm16(audio), out),
            Codec::Alaw => self.resampler.process(&alaw_to_pcm16(audio), out),
        }
    }

    /// What the resampler holds back, as the model's audio (the stream ends).
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        self.resampler.flush(out);
    }

    /// The provider's messages for converted audio, to `emit` in order.
    fn frames<F>(&mut self, pcm: &[u8], mut emit: F) -> Result<usize>
    where
        F: FnMut(&[u8]) -> Result<()>,
    {
        match self.framing {
            UplinkFraming::Binary if pcm.is_empty() => Ok(0),
            UplinkFraming::Binary => emit(pcm).map(|()| 1),
            UplinkFraming::Kyutai => {
                self.held.extend_from_slice(pcm);
                let whole = self.held.len() - self.held.len() % KYUTAI_FRAME_BYTES;
                let mut made = 0;
                for samples in self.held[..whole].chunks_exact(KYUTAI_FRAME_BYTES) {
                    emit(&kyutai_audio_frame(samples)?)?;
                    made += 1;
                }
                self.held.drain(..whole);
                Ok(made)
            }
        }
    }
}

impl Carry for Uplink {
    /// Parse `data` read from the client and carry the audio messages this uplink
    /// owns to `upstream` as masked frames appended to `wire`; see the module docs.
    ///
    /// Errors: [`Error::CloseSent`] if `upstream` has sent its close frame.
    fn feed(
        &mut self,
        client: &mut WsConnection,
        data: &[u8],
        upstream: &mut WsConnection,
        wire: &mut Vec<u8>,
    ) -> Result<Fed> {
        client.receive_data(data);
        let mut report = Report::default();
        let mut handed_back = false;
        while let Some(event) = client.next_event() {
            let audio = match event {
                Event::Binary(audio) if audio.len() <= self.max_message => audio,
                other => {
                    client.put_back(other);
                    handed_back = true;
                    break;
                }
            };
            report.messages += 1;
            report.in_bytes += audio.len();
            let mut pcm = scratch::bytes();
            self.push(&audio, &mut pcm);
            report.out_bytes += pcm.len();
            let made = self.frames(&pcm, |frame| {
                wire.extend_from_slice(&upstream.send_binary(frame)?);
                Ok(())
            });
            report.chunks += made?;
        }
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

    fn spec(framing: UplinkFraming, codec: Codec, in_rate: u32, out_rate: u32) -> UplinkSpec {
        UplinkSpec {
            framing,
            codec,
            in_rate,
            out_rate,
            out_format: match framing {
                UplinkFraming::Kyutai => SampleFormat::F32,
                UplinkFraming::Binary => SampleFormat::Pcm16,
            },
            max_message_bytes: 1 << 16,
        }
    }

    /// What a client writes: masked frames.
    fn client_frames(messages: &[(u8, &[u8])]) -> Vec<u8> {
        messages
            .iter()
            .flat_map(|(op, payload)| encode_frame(*op, payload, true, Some([1, 2, 3, 4])))
            .collect()
    }

    /// The messages the upstream reads from `wire`.
    fn upstream_reads(wire: &[u8]) -> Vec<Event> {
        let mut server = WsConnection::new(1 << 24);
        server.receive_data(wire);
        server.events()
    }

    /// The provider's messages the session's path makes: `push` each piece, then
    /// frame as its dialect would (the same framing code, fed one message at a time).
    fn by_hand(spec: UplinkSpec, pieces: &[&[u8]]) -> (Vec<Event>, usize) {
        let mut uplink = Uplink::new(spec).unwrap();
        let mut out = Vec::new();
        let mut made = 0;
        for piece in pieces {
            let mut pcm = Vec::new();
            uplink.push(piece, &mut pcm);
            made += pcm.len();
            uplink
                .frames(&pcm, |f| {
                    out.push(Event::Binary(f.to_vec()));
                    Ok(())
                })
                .unwrap();
        }
        (out, made)
    }

    const CASES: &[(UplinkFraming, Codec, u32, u32)] = &[
        (UplinkFraming::Binary, Codec::Pcm16, 16000, 16000),
        (UplinkFraming::Binary, Codec::Mulaw, 8000, 16000),
        (UplinkFraming::Binary, Codec::Alaw, 48000, 16000),
        (UplinkFraming::Binary, Codec::Pcm16, 44100, 16000),
        (UplinkFraming::Kyutai, Codec::Pcm16, 16000, 24000),
        (UplinkFraming::Kyutai, Codec::Mulaw, 8000, 24000),
        (UplinkFraming::Kyutai, Codec::Pcm16, 24000, 24000),
    ];

    #[test]
    fn feed_matches_push_for_every_framing_codec_and_rate() {
        let (a, b, c) = (noise(3200, 1), noise(1601, 2), noise(9000, 3));
        for &(framing, codec, in_rate, out_rate) in CASES {
            let s = spec(framing, codec, in_rate, out_rate);
            let mut uplink = Uplink::new(s.clone()).unwrap();
            let mut client = WsConnection::new(1 << 22);
            let mut upstream = WsConnection::new_client(1 << 22);
            let mut wire = Vec::new();
            let data = client_frames(&[(2, &a), (2, &b), (2, &c)]);
            let fed = uplink
                .feed(&mut client, &data, &mut upstream, &mut wire)
                .unwrap();
            let (expected, made) = by_hand(s, &[&a, &b, &c]);
            let what = format!("{framing:?} {codec:?} {in_rate}->{out_rate}");
            assert_eq!(upstream_reads(&wire), expected, "{what}");
            assert!(!fed.handed_back);
            assert_eq!(fed.report.messages, 3);
            assert_eq!(fed.report.in_bytes, a.len() + b.len() + c.len());
            assert_eq!(fed.report.out_bytes, made, "{what}");
            assert_eq!(fed.report.chunks, expected.len());
            assert_eq!(fed.report.next_sequence, 0);
        }
    }

    #[test]
    fn stops_at_the_first_message_it_does_not_own() {
        let (a, b) = (noise(640, 4), noise(640, 5));
        let big = noise(1001, 6);
        let data = client_frames(&[
            (2, &a),
            (9, b"hb"),
            (1, b"{\"type\":\"finalize\"}"),
            (2, &b),
        ]);
        let s = UplinkSpec {
            max_message_bytes: 1000,
            ..spec(UplinkFraming::Binary, Codec::Pcm16, 16000, 16000)
        };
        let mut uplink = Uplink::new(s.clone()).unwrap();
        let mut client = WsConnection::new(1 << 22);
        let mut upstream = WsConnection::new_client(1 << 22);
        let mut wire = Vec::new();
        let fed = uplink
            .feed(&mut client, &data, &mut upstream, &mut wire)
            .unwrap();
        assert!(fed.handed_back);
        assert_eq!(fed.report.messages, 1);
        assert_eq!(upstream_reads(&wire), vec![Event::Binary(a.clone())]);
        assert_eq!(
            client.events(),
            vec![
                Event::Ping(b"hb".to_vec()),
                Event::Text("{\"type\":\"finalize\"}".into()),
                Event::Binary(b.clone()),
            ]
        );
        // A message over the limit is the session's (it refuses it), and so is the rest.
        let mut uplink = Uplink::new(s).unwrap();
        let mut client = WsConnection::new(1 << 22);
        let data = client_frames(&[(2, &big), (2, &a)]);
        let fed = uplink
            .feed(&mut client, &data, &mut upstream, &mut Vec::new())
            .unwrap();
        assert!(fed.handed_back && fed.report.messages == 0);
        assert_eq!(client.events(), vec![Event::Binary(big), Event::Binary(a)]);
    }

    #[test]
    fn any_cut_of_the_reads_gives_the_same_frames() {
        // Enough for two Kyutai messages at every rate; every 29th cut and every cut
        // near a frame's header.
        let (a, b, c) = (noise(200, 7), noise(4001, 8), noise(33, 9));
        let data = client_frames(&[(2, &a), (2, &b), (1, b"{}"), (2, &c)]);
        for &(framing, codec, in_rate, out_rate) in CASES {
            let s = spec(framing, codec, in_rate, out_rate);
            let (expected, made) = by_hand(s.clone(), &[&a, &b]);
            assert!(framing == UplinkFraming::Binary || !expected.is_empty());
            let near =
                |at: usize| (at.saturating_sub(16)..(at + 16).min(data.len())).collect::<Vec<_>>();
            let heads = [0, 200 + 8, 200 + 8 + 4001 + 8];
            let cuts = (0..=data.len())
                .step_by(29)
                .chain(heads.iter().flat_map(|&at| near(at)));
            for cut in cuts {
                let mut uplink = Uplink::new(s.clone()).unwrap();
                let mut client = WsConnection::new(1 << 22);
                let mut upstream = WsConnection::new_client(1 << 22);
                let (wire, report, handed_back) =
                    feed_cut(&mut uplink, &mut client, &data, cut, &mut upstream);
                assert!(handed_back, "cut {cut}");
                assert_eq!(upstream_reads(&wire), expected, "{framing:?} cut {cut}");
                assert_eq!(report.messages, 2);
                assert_eq!(report.in_bytes, a.len() + b.len());
                assert_eq!(report.out_bytes, made);
                assert_eq!(report.chunks, expected.len());
                assert_eq!(
                    client.events(),
                    vec![Event::Text("{}".into()), Event::Binary(c.clone())],
                    "cut {cut}"
                );
            }
        }
    }

    #[test]
    fn kyutai_holds_less_than_a_message_and_hands_it_over() {
        let s = spec(UplinkFraming::Kyutai, Codec::Pcm16, 24000, 24000);
        let mut uplink = Uplink::new(s.clone()).unwrap();
        let mut client = WsConnection::new(1 << 22);
        let mut upstream = WsConnection::new_client(1 << 22);
        let mut wire = Vec::new();
        // 1000 samples: nothing written yet, all of it held as float32.
        let data = client_frames(&[(2, &noise(2000, 10))]);
        let fed = uplink
            .feed(&mut client, &data, &mut upstream, &mut wire)
            .unwrap();
        assert_eq!((fed.report.chunks, fed.report.out_bytes), (0, 4000));
        assert!(wire.is_empty());
        assert_eq!(uplink.held().len(), 4000);
        // What the session held goes on from where it was.
        let held = uplink.take_held();
        assert!(uplink.held().is_empty());
        uplink.set_held(held[..3996].to_vec()).unwrap();
        let fed = uplink
            .feed(
                &mut client,
                &client_frames(&[(2, &noise(1842, 11))]),
                &mut upstream,
                &mut wire,
            )
            .unwrap();
        assert_eq!(fed.report.chunks, 1);
        assert!(uplink.held().is_empty());
        assert!(uplink.set_held(vec![0; KYUTAI_FRAME_BYTES]).is_err());
        assert!(uplink.set_held(vec![0; 6]).is_err());
        let mut binary =
            Uplink::new(spec(UplinkFraming::Binary, Codec::Pcm16, 16000, 16000)).unwrap();
        assert!(binary.set_held(vec![0; 4]).is_err());
        assert!(Uplink::new(UplinkSpec {
            out_format: SampleFormat::Pcm16,
            ..s
        })
        .is_err());
        assert!(UplinkFraming::parse("deepgram").is_err());
    }

    #[test]
    fn after_the_upstreams_close_it_refuses() {
        let mut uplink =
            Uplink::new(spec(UplinkFraming::Binary, Codec::Pcm16, 16000, 16000)).unwrap();
        let mut client = WsConnection::new(1 << 22);
        let mut upstream = WsConnection::new_client(1 << 22);
        upstream.send_close(Some(1000), "").unwrap();
        let err = uplink
            .feed(
                &mut client,
                &client_frames(&[(2, &[0, 0])]),
                &mut upstream,
                &mut Vec::new(),
            )
            .unwrap_err();
        assert_eq!(err, Error::CloseSent);
    }
}
