//! Client frame classification: one pass over a client text frame that says what
//! it is (a unified command, a provider-native frame, plain text, or invalid) and
//! hands back the parsed fields, so that the caller never parses a frame twice.
//!
//! The JSON itself is read by `json`, a small strict parser that builds no tree
//! of its own but calls a [`Builder`] for every value; this module decides what
//! the parsed frame is.
//!
//! # Decisions
//!
//! * **Order of checks.** The size comes first: a frame of more than `max_bytes`
//!   UTF-8 bytes is [`InvalidCode::MessageTooLarge`] without being looked at (even
//!   if it is not UTF-8). Then bytes that are not UTF-8 are
//!   [`InvalidCode::InvalidUtf8`]. Only then is the text parsed.
//! * **Plain text.** Anything that is not JSON is [`Frame::Text`]: plain words,
//!   the empty or an all-whitespace frame, JSON-looking but broken text such as
//!   `{"type": "init"`, a JSON value followed by more text (`42 is the answer`),
//!   and the non-standard `NaN`, `Infinity`, comments, single quotes or trailing
//!   commas (which `json.loads` partly accepts).
//! * **Whitespace** around the JSON value is allowed as in `json.loads` (see
//!   `json`); a frame of other text around it is plain text.
//! * **JSON that is not an object** (`[1]`, `42`, `"x"`, `true`, `null`) is
//!   [`InvalidCode::InvalidMessage`].
//! * **JSON that is refused** (see `json`: too deep, too long an integer, a
//!   lone surrogate) is [`InvalidCode::InvalidMessage`] too, decided as soon as
//!   the parser meets it (the rest of the frame is not looked at).
//! * **Duplicate keys**: for classification the last `"type"` counts (see
//!   `json` for the fields).
//! * **The command name** is the object's `"type"` when it is a string naming a
//!   unified command of the endpoint, compared exactly (case-sensitive; `"Flush"`
//!   and an STT command on the TTS endpoint are native).

mod json;

use std::borrow::Cow;

use crate::builder::Builder;
use crate::{Error, Result};
use json::{Fail, Parser, Validator};
pub use json::{MAX_DEPTH, MAX_INT_DIGITS};

/// The WebSocket endpoint a frame arrived on; it decides which commands exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tts,
    Stt,
}

impl Endpoint {
    /// The names accepted by [`Endpoint::from_name`].
    pub const NAMES: &'static [&'static str] = &["tts", "stt"];

    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "tts" => Ok(Endpoint::Tts),
            "stt" => Ok(Endpoint::Stt),
            _ => Err(Error::UnknownEndpoint {
                name: name.to_owned(),
                expected: Self::NAMES,
            }),
        }
    }

    /// The unified commands of this endpoint.
    pub fn commands(self) -> &'static [Command] {
        use Command::*;
        match self {
            Endpoint::Tts => &[Init, InputText, Flush, Stop, Clear, Configure, Ping],
            Endpoint::Stt => &[Start, Finalize, Stop, Ping],
        }
    }

    /// The unified command named `name` on this endpoint, if there is one.
    pub fn command(self, name: &str) -> Option<Command> {
        use Command::*;
        let cmd = match name {
            "init" => Init,
            "input_text" => InputText,
            "flush" => Flush,
            "stop" => Stop,
            "clear" => Clear,
            "configure" => Configure,
            "ping" => Ping,
            "start" => Start,
            "finalize" => Finalize,
            _ => return None,
        };
        self.commands().contains(&cmd).then_some(cmd)
    }
}

/// A unified client command (PROTOCOL.md sections 4 and 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Init,
    InputText,
    Flush,
    Stop,
    Clear,
    Configure,
    Ping,
    Start,
    Finalize,
}

impl Command {
    /// The command's `type` string.
    pub fn name(self) -> &'static str {
        match self {
            Command::Init => "init",
            Command::InputText => "input_text",
            Command::Flush => "flush",
            Command::Stop => "stop",
            Command::Clear => "clear",
            Command::Configure => "configure",
            Command::Ping => "ping",
            Command::Start => "start",
            Command::Finalize => "finalize",
        }
    }
}

/// Why a frame is invalid; [`InvalidCode::as_str`] is the protocol's error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvalidCode {
    /// Bytes that are not UTF-8: a protocol violation (close 1008).
    InvalidUtf8,
    /// More than `max_bytes` UTF-8 bytes (close 4002).
    MessageTooLarge,
    /// JSON that is not an object, or JSON refused (see the module docs).
    InvalidMessage,
}

impl InvalidCode {
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidCode::InvalidUtf8 => "invalid_utf8",
            InvalidCode::MessageTooLarge => "message_too_large",
            InvalidCode::InvalidMessage => "invalid_message",
        }
    }
}

/// What a client text frame is. `V` is the builder's value for the whole object.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame<'a, V> {
    /// A JSON object whose `type` is a unified command of the endpoint.
    Command { command: Command, fields: V },
    /// A JSON object that is not a unified command; `kind` is its `type` when that
    /// is a string (borrowed from the frame unless it had escapes).
    Native {
        kind: Option<Cow<'a, str>>,
        fields: V,
    },
    /// Text that is not JSON.
    Text,
    /// Refused; `message` says what was wrong, with numbers.
    Invalid { code: InvalidCode, message: String },
}

/// Classify a frame given as text (already known to be UTF-8).
pub fn classify_str<'a, B: Builder>(
    frame: &'a str,
    max_bytes: usize,
    endpoint: Endpoint,
    builder: &mut B,
) -> std::result::Result<Frame<'a, B::Value>, B::Error> {
    if frame.len() > max_bytes {
        return Ok(too_large(frame.len(), max_bytes));
    }
    classify_text(frame, endpoint, builder)
}

/// Classify a frame given as the raw payload of a text frame (UTF-8 not yet checked).
pub fn classify_bytes<'a, B: Builder>(
    frame: &'a [u8],
    max_bytes: usize,
    endpoint: Endpoint,
    builder: &mut B,
) -> std::result::Result<Frame<'a, B::Value>, B::Error> {
    if frame.len() > max_bytes {
        return Ok(too_large(frame.len(), max_bytes));
    }
    match std::str::from_utf8(frame) {
        Ok(text) => classify_text(text, endpoint, builder),
        Err(err) => Ok(Frame::Invalid {
            code: InvalidCode::InvalidUtf8,
            message: utf8_message(frame, &err),
        }),
    }
}

fn too_large<V>(len: usize, max_bytes: usize) -> Frame<'static, V> {
    Frame::Invalid {
        code: InvalidCode::MessageTooLarge,
        message: format!("frame of {len} bytes exceeds the {max_bytes}-byte limit"),
    }
}

fn utf8_message(frame: &[u8], err: &std::str::Utf8Error) -> String {
    let at = err.valid_up_to();
    match err.error_len() {
        Some(n) => format!(
            "frame is not valid UTF-8: invalid byte sequence {:02x?} at offset {at}",
            &frame[at..at + n]
        ),
        None => format!("frame is not valid UTF-8: incomplete sequence at its end (offset {at})"),
    }
}

fn classify_text<'a, B: Builder>(
    text: &'a str,
    endpoint: Endpoint,
    builder: &mut B,
) -> std::result::Result<Frame<'a, B::Value>, B::Error> {
    let mut parser = Parser::new(text, builder);
    parser.skip_ws();
    let first = match parser.peek() {
        Some(b) => b,
        None => return Ok(Frame::Text),
    };
    if first == b'{' {
        let mut kind: Option<Cow<'a, str>> = None;
        let parsed = parser
            .object(1, Some(&mut kind))
            .and_then(|fields| parser.finish().map(|()| fields));
        return match parsed {
            Ok(fields) => Ok(match kind {
                Some(kind) => match endpoint.command(&kind) {
                    Some(command) => Frame::Command { command, fields },
                    None => Frame::Native {
                        kind: Some(kind),
                        fields,
                    },
                },
                None => Frame::Native { kind: None, fields },
            }),
            Err(Fail::Syntax) => Ok(Frame::Text),
            Err(Fail::Refused(message)) => Ok(Frame::Invalid {
                code: InvalidCode::InvalidMessage,
                message,
            }),
            Err(Fail::Build(err)) => Err(err),
        };
    }
    let what = match first {
        b'[' => "a JSON array",
        b'"' => "a JSON string",
        b'-' | b'0'..=b'9' => "a JSON number",
        b't' | b'f' => "a JSON boolean",
        b'n' => "JSON null",
        _ => return Ok(Frame::Text),
    };
    // Not an object: only find out whether it is JSON at all, building nothing.
    let start = parser.pos;
    let mut validator = Validator;
    let mut check = Parser::new(text, &mut validator);
    check.pos = start;
    match check.value(0).and_then(|()| check.finish()) {
        Ok(()) => Ok(Frame::Invalid {
            code: InvalidCode::InvalidMessage,
            message: format!("frame is {what}, not a JSON object"),
        }),
        Err(Fail::Syntax) => Ok(Frame::Text),
        Err(Fail::Refused(message)) => Ok(Frame::Invalid {
            code: InvalidCode::InvalidMessage,
            message,
        }),
        Err(Fail::Build(never)) => match never {},
    }
}

/// The unified command a frame that [`classify_str`] refused as
/// [`InvalidCode::InvalidMessage`] names in its top-level `"type"`, if any.
///
/// Why: the first frame decides the session's mode, and a unified client whose first
/// command carries a refused value (a lone surrogate escape, deep nesting, a huge
/// integer) must stay unified and hear `invalid_message`, not be relayed to the
/// provider. The scan is lenient and iterative: it skips values by counting brackets
/// without judging them, keeps the last `"type"` (as the parser does) and compares
/// that string as written, so an escaped command name is not recognised here.
pub fn refused_command(text: &str, endpoint: Endpoint) -> Option<Command> {
    let bytes = text.as_bytes();
    let mut i = skip_json_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut kind: Option<&[u8]> = None;
    loop {
        i = skip_json_ws(bytes, i);
        match bytes.get(i)? {
            b'}' => break,
            b'"' => {}
            _ => return None,
        }
        let (after_key, key) = raw_string(bytes, i)?;
        i = skip_json_ws(bytes, after_key);
        if *bytes.get(i)? != b':' {
            return None;
        }
        i = skip_json_ws(bytes, i + 1);
        if key == b"type" {
            kind = None;
            if bytes.get(i) == Some(&b'"') {
                let (after, value) = raw_string(bytes, i)?;
                kind = Some(value);
                i = after;
            }
        }
        i = skip_json_value(bytes, i)?;
        i = skip_json_ws(bytes, i);
        match bytes.get(i)? {
            b',' => i += 1,
            b'}' => break,
            _ => return None,
        }
    }
    endpoint.command(std::str::from_utf8(kind?).ok()?)
}

fn skip_json_ws(bytes: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(i) {
        i += 1;
    }
    i
}

/// A string starting at `bytes[i] == b'"'`: the index after its closing quote, and
/// its content as written (escapes left in).
fn raw_string(bytes: &[u8], i: usize) -> Option<(usize, &[u8])> {
    let mut j = i + 1;
    loop {
        match bytes.get(j)? {
            b'"' => return Some((j + 1, &bytes[i + 1..j])),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// The index just after the value at `i` (or `i` itself when nothing is left of a
/// value already read): brackets are counted, strings skipped, nothing is judged.
fn skip_json_value(bytes: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match bytes.get(i)? {
            b'"' => i = raw_string(bytes, i)?.0,
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' if depth == 0 => return Some(i),
            b'}' | b']' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b',' if depth == 0 => return Some(i),
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// A plain Rust JSON value, keeping everything the builder is told.
    #[derive(Clone, Debug, PartialEq)]
    enum J {
        Null,
        Bool(bool),
        Int(i64),
        UInt(u64),
        Big(String),
        Float(f64),
        Str(String),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    struct Tree;

    impl Builder for Tree {
        type Value = J;
        type Key = String;
        type Array = Vec<J>;
        type Map = Vec<(String, J)>;
        type Error = Infallible;

        fn null(&mut self) -> std::result::Result<J, Infallible> {
            Ok(J::Null)
        }
        fn boolean(&mut self, v: bool) -> std::result::Result<J, Infallible> {
            Ok(J::Bool(v))
        }
        fn int(&mut self, v: i64) -> std::result::Result<J, Infallible> {
            Ok(J::Int(v))
        }
        fn uint(&mut self, v: u64) -> std::result::Result<J, Infallible> {
            Ok(J::UInt(v))
        }
        fn big_int(&mut self, v: &str) -> std::result::Result<J, Infallible> {
            Ok(J::Big(v.to_owned()))
        }
        fn f64(&mut self, v: f64) -> std::result::Result<J, Infallible> {
            Ok(J::Float(v))
        }
        fn binary(&mut self, _: &[u8]) -> std::result::Result<J, Infallible> {
            unreachable!("JSON has no binary values")
        }
        fn string(&mut self, v: &str) -> std::result::Result<J, Infallible> {
            Ok(J::Str(v.to_owned()))
        }
        fn key(&mut self, k: &str) -> std::result::Result<String, Infallible> {
            Ok(k.to_owned())
        }
        fn value_key(&mut self, _: J) -> std::result::Result<String, Infallible> {
            unreachable!("JSON keys are strings")
        }
        fn begin_array(&mut self, _: usize) -> std::result::Result<Vec<J>, Infallible> {
            Ok(Vec::new())
        }
        fn push(&mut self, a: &mut Vec<J>, v: J) -> std::result::Result<(), Infallible> {
            a.push(v);
            Ok(())
        }
        fn end_array(&mut self, a: Vec<J>) -> std::result::Result<J, Infallible> {
            Ok(J::Arr(a))
        }
        fn begin_map(&mut self, _: usize) -> std::result::Result<Vec<(String, J)>, Infallible> {
            Ok(Vec::new())
        }
        fn insert(
            &mut self,
            o: &mut Vec<(String, J)>,
            k: String,
            v: J,
        ) -> std::result::Result<(), Infallible> {
            match o.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => o.push((k, v)),
            }
            Ok(())
        }
        fn end_map(&mut self, o: Vec<(String, J)>) -> std::result::Result<J, Infallible> {
            Ok(J::Obj(o))
        }
    }

    fn tts(text: &str) -> Frame<'_, J> {
        classify_str(text, 1 << 20, Endpoint::Tts, &mut Tree).unwrap()
    }

    fn stt(text: &str) -> Frame<'_, J> {
        classify_str(text, 1 << 20, Endpoint::Stt, &mut Tree).unwrap()
    }

    fn obj(pairs: &[(&str, J)]) -> J {
        J::Obj(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn s(v: &str) -> J {
        J::Str(v.to_owned())
    }

    /// The single value of `{"v": <json>}`.
    fn parse_value(json: &str) -> J {
        match tts(&format!("{{\"v\": {json}}}")) {
            Frame::Native {
                fields: J::Obj(mut pairs),
                ..
            } => pairs.remove(0).1,
            other => panic!("{json}: {other:?}"),
        }
    }

    fn invalid_code<V>(frame: &Frame<'_, V>) -> Option<InvalidCode> {
        match frame {
            Frame::Invalid { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn invalid_message<'f, V>(frame: &'f Frame<'_, V>) -> &'f str {
        match frame {
            Frame::Invalid { message, .. } => message,
            _ => panic!("not invalid"),
        }
    }

    #[test]
    fn tts_commands() {
        for name in [
            "init",
            "input_text",
            "flush",
            "stop",
            "clear",
            "configure",
            "ping",
        ] {
            let text = format!("{{\"type\":\"{name}\"}}");
            match tts(&text) {
                Frame::Command { command, fields } => {
                    assert_eq!(command.name(), name);
                    assert_eq!(fields, obj(&[("type", s(name))]));
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn stt_commands() {
        for name in ["start", "finalize", "stop", "ping"] {
            let text = format!("{{\"type\":\"{name}\"}}");
            assert!(
                matches!(stt(&text), Frame::Command { command, .. } if command.name() == name),
                "{name}"
            );
        }
        // TTS commands are native on STT and the other way round.
        assert_eq!(
            stt(r#"{"type":"flush"}"#),
            Frame::Native {
                kind: Some("flush".into()),
                fields: obj(&[("type", s("flush"))])
            }
        );
        assert!(
            matches!(tts(r#"{"type":"start"}"#), Frame::Native { kind: Some(k), .. } if k == "start")
        );
        assert!(matches!(
            tts(r#"{"type":"finalize"}"#),
            Frame::Native { .. }
        ));
    }

    #[test]
    fn command_fields_are_the_whole_object() {
        let frame = tts(
            r#"{"type":"input_text","text":"Hello","n":3,"x":null,"ok":true,"f":1.5,"l":[1,"a"],"d":{"k":{}}}"#,
        );
        let expected = obj(&[
            ("type", s("input_text")),
            ("text", s("Hello")),
            ("n", J::Int(3)),
            ("x", J::Null),
            ("ok", J::Bool(true)),
            ("f", J::Float(1.5)),
            ("l", J::Arr(vec![J::Int(1), s("a")])),
            ("d", obj(&[("k", obj(&[]))])),
        ]);
        assert_eq!(
            frame,
            Frame::Command {
                command: Command::InputText,
                fields: expected
            }
        );
    }

    #[test]
    fn native_objects() {
        assert_eq!(
            tts(r#"{"type":"Speak","text":"hi"}"#),
            Frame::Native {
                kind: Some("Speak".into()),
                fields: obj(&[("type", s("Speak")), ("text", s("hi"))])
            }
        );
        assert!(
            matches!(tts(r#"{"type":"control","action":"flush"}"#), Frame::Native { kind: Some(k), .. } if k == "control")
        );
        assert_eq!(
            tts(r#"{"text":" "}"#),
            Frame::Native {
                kind: None,
                fields: obj(&[("text", s(" "))])
            }
        );
        assert_eq!(
            tts("{}"),
            Frame::Native {
                kind: None,
                fields: obj(&[])
            }
        );
        // A `type` that is no string: native without a kind.
        assert_eq!(
            tts(r#"{"type":5}"#),
            Frame::Native {
                kind: None,
                fields: obj(&[("type", J::Int(5))])
            }
        );
        assert!(matches!(
            tts(r#"{"type":null}"#),
            Frame::Native { kind: None, .. }
        ));
        assert!(matches!(
            tts(r#"{"type":["flush"]}"#),
            Frame::Native { kind: None, .. }
        ));
        // Case matters; a nested `type` does not count.
        assert!(
            matches!(tts(r#"{"type":"Flush"}"#), Frame::Native { kind: Some(k), .. } if k == "Flush")
        );
        assert!(matches!(
            tts(r#"{"data":{"type":"flush"}}"#),
            Frame::Native { kind: None, .. }
        ));
    }

    #[test]
    fn plain_text() {
        for text in [
            "Hello world",
            "",
            "   ",
            "\n\t",
            r#"{"type": "init""#,
            r#"{"type": "init",}"#,
            "{'type': 'init'}",
            r#"{"type": "flush"} trailing"#,
            "42 is the answer",
            "true story",
            "nullable",
            "[1, 2",
            "\"unterminated",
            "NaN",
            "Infinity",
            "-Infinity",
            "-",
            "01",
            "1.",
            ".5",
            "1e",
            "{\"a\":NaN}",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{\"a\":01}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\\u12G4\"}",
            "\u{a0}{\"type\":\"flush\"}",
            "{\"type\":\"flush\"}\u{c}",
            "/* c */ {}",
            "{1: 2}",
        ] {
            assert_eq!(tts(text), Frame::Text, "{text:?}");
        }
    }

    #[test]
    fn whitespace_around_json_is_allowed() {
        assert!(matches!(
            tts(" \t\r\n{\"type\":\"flush\"} \n"),
            Frame::Command {
                command: Command::Flush,
                ..
            }
        ));
        assert!(matches!(
            tts("{ \"type\" : \"flush\" , \"a\" : [ 1 , 2 ] }"),
            Frame::Command { .. }
        ));
        assert_eq!(
            invalid_code(&tts(" [1] ")),
            Some(InvalidCode::InvalidMessage)
        );
    }

    #[test]
    fn json_that_is_no_object_is_invalid() {
        for (text, what) in [
            ("[1]", "array"),
            ("[]", "array"),
            ("42", "number"),
            ("-1.5e3", "number"),
            ("\"x\"", "string"),
            ("true", "boolean"),
            ("false", "boolean"),
            ("null", "null"),
        ] {
            let frame = tts(text);
            assert_eq!(
                invalid_code(&frame),
                Some(InvalidCode::InvalidMessage),
                "{text}"
            );
            assert!(invalid_message(&frame).contains(what), "{text}: {frame:?}");
        }
    }

    #[test]
    fn too_large_is_checked_first() {
        let big = "x".repeat(40000);
        let frame = classify_str(&big, 32768, Endpoint::Tts, &mut Tree).unwrap();
        assert_eq!(
            frame,
            Frame::Invalid {
                code: InvalidCode::MessageTooLarge,
                message: "frame of 40000 bytes exceeds the 32768-byte limit".into()
            }
        );
        // Exactly at the limit is fine; the limit counts UTF-8 bytes, not characters.
        let at = r#"{"type":"flush"}"#;
        assert!(matches!(
            classify_str(at, at.len(), Endpoint::Tts, &mut Tree),
            Ok(Frame::Command { .. })
        ));
        let frame = classify_str("\u{e9}\u{e9}", 3, Endpoint::Tts, &mut Tree).unwrap();
        assert_eq!(invalid_code(&frame), Some(InvalidCode::MessageTooLarge));
        // Before UTF-8 validation.
        let frame = classify_bytes(&[0xff; 10], 5, Endpoint::Tts, &mut Tree).unwrap();
        assert_eq!(invalid_code(&frame), Some(InvalidCode::MessageTooLarge));
    }

    #[test]
    fn invalid_utf8() {
        let frame =
            classify_bytes(b"{\"text\":\"a\xffb\"}", 100, Endpoint::Tts, &mut Tree).unwrap();
        assert_eq!(invalid_code(&frame), Some(InvalidCode::InvalidUtf8));
        assert!(invalid_message(&frame).contains("offset 10"), "{frame:?}");
        let frame = classify_bytes(b"abc\xe2\x82", 100, Endpoint::Tts, &mut Tree).unwrap();
        assert!(invalid_message(&frame).contains("incomplete"), "{frame:?}");
        // Surrogates encoded in UTF-8 (CESU) are not UTF-8.
        let frame = classify_bytes(b"\xed\xa0\x80", 100, Endpoint::Tts, &mut Tree).unwrap();
        assert_eq!(invalid_code(&frame), Some(InvalidCode::InvalidUtf8));
    }

    #[test]
    fn bytes_and_str_agree() {
        for text in [
            r#"{"type":"flush"}"#,
            r#"{"type":"Speak","text":"h\u00e9"}"#,
            "Hello",
            "[1]",
            "{\"text\":\"\u{1F600} caf\u{e9}\"}",
        ] {
            let a = classify_str(text, 1000, Endpoint::Tts, &mut Tree).unwrap();
            let b = classify_bytes(text.as_bytes(), 1000, Endpoint::Tts, &mut Tree).unwrap();
            assert_eq!(a, b, "{text}");
        }
    }

    #[test]
    fn depth_limit() {
        let ok = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(matches!(tts(&ok), Frame::Native { .. }));
        let deep = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        let frame = tts(&deep);
        assert_eq!(invalid_code(&frame), Some(InvalidCode::InvalidMessage));
        assert!(invalid_message(&frame).contains("64"));
        // A very deep frame does not overflow the stack, object or array at the top.
        assert_eq!(
            invalid_code(&tts(&"{\"a\":".repeat(100_000))),
            Some(InvalidCode::InvalidMessage)
        );
        assert_eq!(
            invalid_code(&tts(&"[".repeat(100_000))),
            Some(InvalidCode::InvalidMessage)
        );
        let ok_array = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(invalid_message(&tts(&ok_array)).contains("array"));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_value("0"), J::Int(0));
        assert_eq!(parse_value("-0"), J::Int(0));
        assert_eq!(
            parse_value("123456789012345678"),
            J::Int(123456789012345678)
        );
        assert_eq!(parse_value("9223372036854775807"), J::Int(i64::MAX));
        assert_eq!(parse_value("-9223372036854775808"), J::Int(i64::MIN));
        assert_eq!(parse_value("9223372036854775808"), J::UInt(1 << 63));
        assert_eq!(parse_value("18446744073709551615"), J::UInt(u64::MAX));
        assert_eq!(
            parse_value("18446744073709551616"),
            J::Big("18446744073709551616".into())
        );
        assert_eq!(
            parse_value("-9223372036854775809"),
            J::Big("-9223372036854775809".into())
        );
        assert_eq!(parse_value("1.0"), J::Float(1.0));
        assert_eq!(parse_value("-0.0"), J::Float(-0.0));
        assert_eq!(parse_value("1e2"), J::Float(100.0));
        assert_eq!(parse_value("1E+2"), J::Float(100.0));
        assert_eq!(parse_value("25e-1"), J::Float(2.5));
        assert_eq!(parse_value("0.1"), J::Float(0.1));
        assert_eq!(parse_value("1e400"), J::Float(f64::INFINITY));
        assert_eq!(parse_value("-1e400"), J::Float(f64::NEG_INFINITY));
        let digits = "9".repeat(MAX_INT_DIGITS);
        assert_eq!(parse_value(&digits), J::Big(digits.clone()));
        let text = format!("{{\"v\": 1{digits}}}");
        let frame = tts(&text);
        assert_eq!(invalid_code(&frame), Some(InvalidCode::InvalidMessage));
        assert!(invalid_message(&frame).contains("641 digits"), "{frame:?}");
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(parse_value(r#""plain""#), s("plain"));
        assert_eq!(parse_value(r#""""#), s(""));
        assert_eq!(
            parse_value(r#""a\"b\\c\/d\be\ff\ng\rh\ti""#),
            s("a\"b\\c/d\u{8}e\u{c}f\ng\rh\ti")
        );
        assert_eq!(parse_value(r#""\u00e9\u4e2D""#), s("\u{e9}\u{4e2d}"));
        assert_eq!(parse_value(r#""x\ud83d\ude00y""#), s("x\u{1F600}y"));
        assert_eq!(
            parse_value("\"caf\u{e9} \u{1F600}\""),
            s("caf\u{e9} \u{1F600}")
        );
        assert_eq!(parse_value(r#""\u0000""#), s("\0"));
        assert_eq!(parse_value("\"\u{7f}\""), s("\u{7f}"));
        // Long strings cross the eight-byte scanner in every alignment.
        for n in 0..40 {
            let body = format!("{}\\n{}", "a".repeat(n), "b".repeat(n));
            assert_eq!(
                parse_value(&format!("\"{body}\"")),
                s(&format!("{}\n{}", "a".repeat(n), "b".repeat(n)))
            );
            let raw = format!("\"{}\u{1}\"", "a".repeat(n));
            assert_eq!(
                tts(&format!("{{\"v\": {raw}}}")),
                Frame::Text,
                "control char after {n}"
            );
        }
        for lone in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\ud800x""#,
        ] {
            let text = format!("{{\"v\": {lone}}}");
            let frame = tts(&text);
            assert_eq!(
                invalid_code(&frame),
                Some(InvalidCode::InvalidMessage),
                "{lone}"
            );
            assert!(invalid_message(&frame).contains("surrogate"));
        }
    }

    #[test]
    fn escaped_keys_and_types() {
        // "\u0074ype" is "type".
        let frame = tts(r#"{"\u0074ype":"fl\u0075sh"}"#);
        assert_eq!(
            frame,
            Frame::Command {
                command: Command::Flush,
                fields: obj(&[("type", s("flush"))])
            }
        );
        assert!(
            matches!(tts(r#"{"type":"Sp\u0065ak"}"#), Frame::Native { kind: Some(Cow::Owned(k)), .. } if k == "Speak")
        );
        assert!(matches!(
            tts(r#"{"type":"Speak"}"#),
            Frame::Native {
                kind: Some(Cow::Borrowed("Speak")),
                ..
            }
        ));
    }

    #[test]
    fn duplicate_keys_last_wins() {
        assert_eq!(
            tts(r#"{"type":"flush","a":1,"type":"Speak"}"#),
            Frame::Native {
                kind: Some("Speak".into()),
                fields: obj(&[("type", s("Speak")), ("a", J::Int(1))])
            }
        );
        assert!(matches!(
            tts(r#"{"type":"Speak","type":"flush"}"#),
            Frame::Command {
                command: Command::Flush,
                ..
            }
        ));
        assert!(matches!(
            tts(r#"{"type":"flush","type":1}"#),
            Frame::Native { kind: None, .. }
        ));
    }

    #[test]
    fn endpoint_names() {
        assert_eq!(Endpoint::from_name("tts"), Ok(Endpoint::Tts));
        assert_eq!(Endpoint::from_name("stt"), Ok(Endpoint::Stt));
        let err = Endpoint::from_name("TTS").unwrap_err();
        assert!(matches!(err, Error::UnknownEndpoint { .. }));
        assert!(err.to_string().contains("\"TTS\""), "{err}");
    }

    #[test]
    fn refused_command_reads_the_top_level_type_of_a_refused_frame() {
        let deep = format!(
            "{{\"style\":{}{},\"type\":\"init\"}}",
            "[".repeat(70),
            "]".repeat(70)
        );
        let huge = format!("{{\"type\":\"start\",\"sample_rate\":{}}}", "9".repeat(700));
        for (frame, endpoint, want) in [
            (
                r#"{"type":"input_text","text":"\udfff"}"#,
                Endpoint::Tts,
                Some(Command::InputText),
            ),
            (
                r#"{"text":"\ud800","type" : "flush" }"#,
                Endpoint::Tts,
                Some(Command::Flush),
            ),
            (
                r#"{"type":"init","x":{"type":"stop"},"y":"}"}"#,
                Endpoint::Tts,
                Some(Command::Init),
            ),
            (r#"{"type":"init","type":"Speak"}"#, Endpoint::Tts, None),
            (r#"{"type":"start"}"#, Endpoint::Tts, None),
            (r#"{"type":5}"#, Endpoint::Tts, None),
            (r#"{"text":"\udfff"}"#, Endpoint::Tts, None),
            (r#"{"type":"init""#, Endpoint::Tts, None),
            (r#"["type","init"]"#, Endpoint::Tts, None),
            (deep.as_str(), Endpoint::Tts, Some(Command::Init)),
            (huge.as_str(), Endpoint::Stt, Some(Command::Start)),
        ] {
            assert_eq!(refused_command(frame, endpoint), want, "{frame}");
        }
    }
}
