//! The data plane's loop: every lent stream of a worker served in one wake-up.
//!
//! A [`Plane`] is one `epoll` set over the source sockets of the streams the
//! sessions lent (the upstream's, for TTS). The control plane (trio) waits on the
//! set's own descriptor; when it is readable, one call finds every ready source
//! ([`Plane::ready`]) and [`carry`] serves each: one read, the stream's
//! [`Carry::feed`] (which converts and frames what it owns and stops at the first
//! message it does not), one write of the frames to the sink socket. Anything
//! that is not the steady state is reported in the [`Carried`] outcome, and the
//! control plane takes the stream back: a message the stream does not own, a
//! sink that did not take every byte at once (its backpressure and timeout stay
//! the control plane's), an end of file, an error.
//!
//! Level-triggered on purpose: one read per ready stream per call is fair to
//! every stream, and what is left keeps the set readable for the next call.
//!
//! The sockets stay the control plane's: a plane never opens, closes or
//! accepts; it reads and writes descriptors it is given, which must stay open
//! (and the stream lent) while they are in the set.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

pub use crate::carry::Carry;
use crate::carry::Fed;
use crate::ws::WsConnection;

/// Bytes taken from a source per read (the socket's usual receive window is
/// larger than one read needs: a stream that has more is ready again at once).
pub const READ_SIZE: usize = 65536;

/// The events one [`Plane::ready`] call returns at most.
pub const MAX_EVENTS: usize = 1024;

/// How the source looked after the read.
#[derive(Debug)]
pub enum Source {
    /// Open (the read found data, or nothing yet).
    Open,
    /// The peer closed its side (a read of zero bytes).
    Ended,
    /// The read failed.
    Failed(io::Error),
}

/// What [`carry`] did for one stream.
#[derive(Debug)]
pub struct Carried {
    pub fed: Fed,
    pub source: Source,
    /// Frames the sink did not take at once (the control plane writes them,
    /// waiting as long as its slow-client rule allows); empty when all went.
    pub unwritten: Vec<u8>,
    /// The write to the sink failed (the peer is gone); `unwritten` holds the
    /// frames that were not written.
    pub sink_error: Option<io::Error>,
    /// A conversion error (nothing was written for that read).
    pub error: Option<crate::Error>,
    /// From the read to the last byte written.
    pub elapsed: Duration,
}

impl Carried {
    /// True when the stream stays on the plane: all written, nothing to hand back.
    pub fn steady(&self) -> bool {
        !self.fed.handed_back
            && matches!(self.source, Source::Open)
            && self.unwritten.is_empty()
            && self.sink_error.is_none()
            && self.error.is_none()
    }
}

/// One `epoll` set and the buffers its calls reuse.
pub struct Plane {
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
    read_buf: Vec<u8>,
    wire: Vec<u8>,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Plane {
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the descriptor returned is new and ours alone.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Plane {
            // SAFETY: `fd` was just created and is owned by nothing else.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS],
            read_buf: vec![0; READ_SIZE],
            wire: Vec::new(),
        })
    }

    /// The set's descriptor: readable while any watched source is.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Watch `fd` for input; [`Plane::ready`] will name it by `key`.
    pub fn watch(&self, fd: RawFd, key: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key,
        };
        // SAFETY: `event` outlives the call; the kernel only reads it.
        check(unsafe { libc::epoll_ctl(self.fd(), libc::EPOLL_CTL_ADD, fd, &mut event) })?;
        Ok(())
    }

    /// Stop watching `fd` (nothing if it is not watched, or already closed).
    pub fn unwatch(&self, fd: RawFd) {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `watch`. ENOENT and EBADF mean it is not in the set.
        unsafe { libc::epoll_ctl(self.fd(), libc::EPOLL_CTL_DEL, fd, &mut event) };
    }

    /// The keys of the sources that are ready now (no waiting), appended to `keys`.
    pub fn ready(&mut self, keys: &mut Vec<u64>) -> io::Result<()> {
        let n = loop {
            // SAFETY: `events` has room for MAX_EVENTS entries the kernel writes.
            let n = unsafe {
                libc::epoll_wait(
                    self.fd(),
                    self.events.as_mut_ptr(),
                    MAX_EVENTS as libc::c_int,
                    0,
                )
            };
            match check(n) {
                Ok(n) => break n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        keys.extend(self.events[..n].iter().map(|e| e.u64));
        Ok(())
    }

    /// Serve one stream: one read of `source_fd`, `carrier.feed`, one write to
    /// `sink_fd`. See the module docs for what comes back.
    pub fn carry<C: Carry + ?Sized>(
        &mut self,
        source_fd: RawFd,
        source: &mut WsConnection,
        carrier: &mut C,
        sink_fd: RawFd,
        sink: &mut WsConnection,
    ) -> Carried {
        let start = Instant::now();
        let mut carried = Carried {
            fed: Fed::default(),
            source: Source::Open,
            unwritten: Vec::new(),
            sink_error: None,
            error: None,
            elapsed: Duration::ZERO,
        };
        let n = match receive(source_fd, &mut self.read_buf) {
            Ok(0) => {
                carried.source = Source::Ended;
                return carried;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return carried,
            Err(e) => {
                carried.source = Source::Failed(e);
                return carried;
            }
        };
        self.wire.clear();
        match carrier.feed(source, &self.read_buf[..n], sink, &mut self.wire) {
            Ok(fed) => carried.fed = fed,
            Err(e) => {
                carried.error = Some(e);
                return carried;
            }
        }
        let mut written = 0;
        while written < self.wire.len() {
            match send(sink_fd, &self.wire[written..]) {
                Ok(k) => written += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    carried.sink_error = Some(e);
                    break;
                }
            }
        }
        if written < self.wire.len() {
            carried.unwritten = self.wire[written..].to_vec();
        }
        carried.elapsed = start.elapsed();
        carried
    }
}

/// One `recv`, retried on EINTR.
fn receive(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writing.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `send` (no SIGPIPE), retried on EINTR; WouldBlock when the kernel took nothing.
fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `data` is valid for `data.len()` bytes of reading.
        let n = unsafe {
            libc::send(
                fd,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{Codec, Framing, Relay, RelaySpec};
    use crate::resample::SampleFormat;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn relay(framing: Framing) -> Relay {
        Relay::new(RelaySpec {
            framing,
            in_rate: 24000,
            in_format: SampleFormat::Pcm16,
            codec: Codec::Pcm16,
            out_rate: 24000,
            max_chunk_bytes: 4800,
            context_id: "c".into(),
            next_sequence: 0,
        })
        .unwrap()
    }

    struct Pair {
        provider: UnixStream, // the provider's end of the source
        source: UnixStream,
        sink: UnixStream,
        client: UnixStream, // the client's end of the sink
    }

    fn pair() -> Pair {
        let (provider, source) = UnixStream::pair().unwrap();
        let (sink, client) = UnixStream::pair().unwrap();
        source.set_nonblocking(true).unwrap();
        sink.set_nonblocking(true).unwrap();
        client.set_nonblocking(true).unwrap();
        Pair {
            provider,
            source,
            sink,
            client,
        }
    }

    /// One stream's state on a plane of its own.
    struct Lent {
        plane: Plane,
        relay: Relay,
        up: WsConnection,
        down: WsConnection,
    }

    impl Lent {
        fn new(max_message_bytes: usize) -> Self {
            Lent {
                plane: Plane::new().unwrap(),
                relay: relay(Framing::Binary),
                up: WsConnection::new_client(max_message_bytes),
                down: WsConnection::new(max_message_bytes),
            }
        }

        fn carry(&mut self, source: &UnixStream, sink: &UnixStream) -> Carried {
            let (source, sink) = (source.as_raw_fd(), sink.as_raw_fd());
            self.plane
                .carry(source, &mut self.up, &mut self.relay, sink, &mut self.down)
        }
    }

    /// A server-side frame from the provider, as a masked client frame would not be.
    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        crate::ws::framing::encode_frame(opcode, payload, true, None)
    }

    fn client_events(client: &mut UnixStream) -> Vec<crate::ws::Event> {
        let mut reader = WsConnection::new_client(1 << 20);
        let mut buf = vec![0; 1 << 20];
        let mut all = Vec::new();
        while let Ok(n) = client.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        reader.receive_data(&all);
        reader.events()
    }

    #[test]
    fn ready_names_only_the_sources_with_input() {
        let mut plane = Plane::new().unwrap();
        let mut a = pair();
        let b = pair();
        plane.watch(a.source.as_raw_fd(), 1).unwrap();
        plane.watch(b.source.as_raw_fd(), 2).unwrap();
        let mut keys = Vec::new();
        plane.ready(&mut keys).unwrap();
        assert!(keys.is_empty());
        a.provider.write_all(&server_frame(2, &[0; 960])).unwrap();
        plane.ready(&mut keys).unwrap();
        assert_eq!(keys, vec![1]);
        plane.unwatch(a.source.as_raw_fd());
        keys.clear();
        plane.ready(&mut keys).unwrap();
        assert!(keys.is_empty(), "an unwatched source is not reported");
        plane.unwatch(a.source.as_raw_fd()); // twice is harmless
    }

    #[test]
    fn owned_audio_goes_straight_to_the_sink() {
        let mut p = pair();
        let mut s = Lent::new(1 << 20);
        let audio: Vec<u8> = (0..4800u32).map(|i| (i % 251) as u8).collect();
        p.provider.write_all(&server_frame(2, &audio)).unwrap();
        let carried = s.carry(&p.source, &p.sink);
        assert!(carried.steady(), "{carried:?}");
        assert_eq!(carried.fed.report.messages, 1);
        assert_eq!(carried.fed.report.in_bytes, 4800);
        let events = client_events(&mut p.client);
        assert_eq!(events.len(), carried.fed.report.chunks);
        assert!(matches!(&events[0], crate::ws::Event::Text(t) if t.contains("audio_chunk")));
    }

    #[test]
    fn a_message_it_does_not_own_is_handed_back_in_order() {
        let mut p = pair();
        let mut s = Lent::new(1 << 20);
        let mut wire = server_frame(2, &[1; 960]);
        wire.extend(server_frame(1, b"{\"type\":\"done\"}"));
        wire.extend(server_frame(2, &[2; 960]));
        p.provider.write_all(&wire).unwrap();
        let carried = s.carry(&p.source, &p.sink);
        assert!(carried.fed.handed_back && !carried.steady());
        assert_eq!(carried.fed.report.messages, 1);
        let rest = s.up.events();
        assert!(matches!(&rest[0], crate::ws::Event::Text(t) if t.contains("done")));
        assert!(matches!(&rest[1], crate::ws::Event::Binary(b) if b[0] == 2));
    }

    #[test]
    fn what_the_sink_does_not_take_comes_back_unwritten() {
        let mut p = pair();
        let mut s = Lent::new(1 << 22);
        // Fill the sink's buffer first, so the carried frames cannot all go.
        let filler = vec![0u8; 1 << 16];
        while send(p.sink.as_raw_fd(), &filler).is_ok() {}
        p.provider.set_nonblocking(true).unwrap();
        p.provider.write_all(&server_frame(2, &[3; 4800])).unwrap();
        let carried = s.carry(&p.source, &p.sink);
        assert!(!carried.steady());
        assert!(!carried.unwritten.is_empty());
        assert!(carried.sink_error.is_none());
        assert_eq!(carried.fed.report.messages, 1);
    }

    #[test]
    fn end_of_file_and_a_gone_sink_are_reported() {
        let p = pair();
        let mut s = Lent::new(1 << 20);
        let Pair {
            mut provider,
            source,
            sink,
            client,
        } = p;
        provider.write_all(&server_frame(2, &[4; 960])).unwrap();
        drop(client);
        let carried = s.carry(&source, &sink);
        assert!(carried.sink_error.is_some(), "{carried:?}");
        assert!(!carried.unwritten.is_empty());
        drop(provider);
        let carried = s.carry(&source, &sink);
        assert!(matches!(carried.source, Source::Ended));
    }

    #[test]
    fn nothing_to_read_is_steady_and_empty() {
        let p = pair();
        let mut s = Lent::new(1 << 20);
        let carried = s.carry(&p.source, &p.sink);
        assert!(carried.steady());
        assert_eq!(carried.fed.report.messages, 0);
    }
}
