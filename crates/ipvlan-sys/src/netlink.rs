//! The one netlink socket of ipvlan-rs, generic over the protocol family, and the
//! framing every family shares: the message header, alignment, sequence numbers,
//! multi-part dumps, acknowledgements and errors.
//!
//! A [`Family`] names the protocol (`NETLINK_ROUTE`, `NETLINK_NETFILTER`) and the type
//! its messages decode to; [`Socket::request`] sends one and collects its answers.
//! Messages are framed with `netlink-packet-core`. rtnetlink's payloads are
//! `netlink-packet-route`'s (see [`crate::rtnl`]); the netfilter subsystems ipvlan-rs
//! speaks (nfqueue, the nftables generation) are not in a well-kept crate
//! (`netlink-packet-netfilter` has neither nfqueue nor a zero-copy reader for it), so
//! their payload is [`NfMessage`]: the `nfgenmsg` header and attributes whose values each
//! subsystem encodes itself.
//!
//! Hot paths that must not copy (queued packets) read a datagram with [`frames`],
//! which yields each message as a view into the receive buffer.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use netlink_packet_core::{
    DecodeError, DoneBuffer, Emitable, ErrorBuffer, NLA_HEADER_SIZE, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NetlinkBuffer, NetlinkDeserializable,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, Nla, NlaBuffer,
    NlasIterator,
};
use nix::sys::socket::{MsgFlags, recv};

use crate::NetNs;

/// Length of `struct nlmsghdr`; a message's payload starts here.
pub const NLMSG_HDRLEN: usize = 16;

/// Length of `struct nfgenmsg`, the header of every netfilter message.
pub const NFGENMSG_LEN: usize = 4;

/// Receive buffer of [`Socket::request`]: a dump's datagrams are at most 32 KiB, a
/// request with its answer far less.
const REQUEST_BUF: usize = 1 << 18;

/// A netlink protocol family and the messages it carries.
pub trait Family {
    /// `NETLINK_*`.
    const PROTOCOL: isize;
    /// A message after its `nlmsghdr`.
    type Message: NetlinkSerializable + NetlinkDeserializable + fmt::Debug;
}

/// `NETLINK_NETFILTER`: nfqueue, nftables.
#[derive(Debug)]
pub struct Nfnetlink;

impl Family for Nfnetlink {
    const PROTOCOL: isize = netlink_sys::protocols::NETLINK_NETFILTER;
    type Message = NfMessage;
}

/// What a netlink exchange can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The kernel refused the request (an `NLMSG_ERROR`, or a dump that ended in one).
    #[error("{}", nix::errno::Errno::from_raw(*errno).desc())]
    Kernel { errno: i32 },
    #[error("cannot decode a netlink message: {0}")]
    Decode(String),
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e.to_string())
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            Error::Kernel { errno } => io::Error::from_raw_os_error(errno),
            Error::Decode(m) => io::Error::new(io::ErrorKind::InvalidData, m),
        }
    }
}

/// One message of a received datagram, not decoded: a view into the buffer.
#[derive(Clone, Copy)]
pub struct Frame<'a> {
    /// The message, header included, its length checked against the header's.
    bytes: &'a [u8],
}

impl fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("type", &self.message_type())
            .field("seq", &self.seq())
            .field("len", &self.bytes().len())
            .finish()
    }
}

impl<'a> Frame<'a> {
    fn header(&self) -> NetlinkBuffer<&'a [u8]> {
        NetlinkBuffer::new(self.bytes)
    }

    pub fn message_type(&self) -> u16 {
        self.header().message_type()
    }

    pub fn flags(&self) -> u16 {
        self.header().flags()
    }

    pub fn seq(&self) -> u32 {
        self.header().sequence_number()
    }

    /// The message after its header.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[NLMSG_HDRLEN..]
    }

    /// The whole message, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// For the end of an exchange (`NLMSG_ERROR`, `NLMSG_DONE`): `Ok` for an
    /// acknowledgement or a complete dump, the kernel's errno for a refusal. `None`
    /// for any other message.
    pub fn status(&self) -> Option<Result<(), Error>> {
        let code = match self.message_type() {
            NLMSG_ERROR => match ErrorBuffer::new_checked(self.payload()) {
                Ok(e) => e.code().map_or(0, |c| c.get()),
                Err(e) => return Some(Err(e.into())),
            },
            // A dump's end carries an int: 0, or the error that cut the dump short.
            // Old kernels send it empty.
            NLMSG_DONE if self.payload().is_empty() => 0,
            NLMSG_DONE => match DoneBuffer::new_checked(self.payload()) {
                Ok(d) => d.code(),
                Err(e) => return Some(Err(e.into())),
            },
            _ => return None,
        };
        Some(if code == 0 {
            Ok(())
        } else {
            Err(Error::Kernel {
                errno: code.saturating_neg(),
            })
        })
    }

    /// Decodes the message with its family's payload type.
    pub fn decode<M: NetlinkDeserializable>(&self) -> Result<M, Error> {
        match NetlinkMessage::<M>::deserialize(self.bytes())?.payload {
            NetlinkPayload::InnerMessage(m) => Ok(m),
            _ => Err(Error::Decode(format!(
                "a control message (type {}) where a payload was expected",
                self.message_type()
            ))),
        }
    }
}

/// The messages of a datagram in order. A malformed message (a length out of bounds)
/// is yielded as an error and ends the iteration.
pub fn frames(datagram: &[u8]) -> Frames<'_> {
    Frames { rest: datagram }
}

/// Iterator of [`frames`].
#[derive(Debug)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match NetlinkBuffer::new_checked(self.rest) {
            Ok(buf) => {
                let len = buf.length() as usize;
                let bytes = &self.rest[..len];
                self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
                Some(Ok(Frame { bytes }))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e.into()))
            }
        }
    }
}

/// Rounds a message or attribute length up to netlink's 4-byte alignment.
pub const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Serializes `msg` with a request header.
pub fn encode<M: NetlinkSerializable>(msg: M, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    nl.finalize();
    let mut out = vec![0; nl.buffer_len()];
    nl.serialize(&mut out);
    out
}

/// A netlink socket of family `F`, bound in the namespace it was opened in.
pub struct Socket<F: Family> {
    sock: netlink_sys::Socket,
    seq: u32,
    buf: Vec<u8>,
    family: PhantomData<fn() -> F>,
}

impl<F: Family> fmt::Debug for Socket<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("protocol", &F::PROTOCOL)
            .field("fd", &self.sock.as_raw_fd())
            .field("seq", &self.seq)
            .finish()
    }
}

impl<F: Family> Socket<F> {
    /// A socket in the calling thread's namespace, with a port id the kernel picks.
    pub fn open() -> io::Result<Self> {
        let mut sock = netlink_sys::Socket::new(F::PROTOCOL)?;
        sock.bind_auto()?;
        Ok(Self {
            sock,
            seq: 0,
            buf: Vec::new(),
            family: PhantomData,
        })
    }

    /// A socket inside `ns`.
    pub fn open_in(ns: &NetNs) -> io::Result<Self> {
        ns.run(Self::open)?
    }

    /// The socket itself, for its options.
    pub fn inner(&self) -> &netlink_sys::Socket {
        &self.sock
    }

    /// Sends one message (`NLM_F_REQUEST` is added) with sequence number `seq`, without
    /// waiting for anything.
    pub fn send(&self, msg: F::Message, flags: u16, seq: u32) -> io::Result<()> {
        self.sock
            .send(&encode(msg, NLM_F_REQUEST | flags, seq), 0)
            .map(drop)
    }

    /// Reads one datagram into `buf`; its length, which is more than `buf`'s when the
    /// datagram did not fit (`MSG_TRUNC`).
    pub fn recv_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv(self.sock.as_raw_fd(), buf, MsgFlags::MSG_TRUNC).map_err(io::Error::from)
    }

    /// Sends a request under the next sequence number and collects its answers: up to
    /// the acknowledgement (`NLM_F_ACK`) or the end of the dump (`NLM_F_DUMP`); a request
    /// that asks for neither ends at its first answer. Messages about other sequence
    /// numbers (answers to an abandoned request) are skipped.
    pub fn request(&mut self, msg: F::Message, flags: u16) -> Result<Vec<F::Message>, Error> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(msg, flags, seq)?;
        if self.buf.is_empty() {
            self.buf = vec![0; REQUEST_BUF];
        }
        let first_answer_ends = flags & (NLM_F_ACK | NLM_F_DUMP) == 0;
        let mut out = Vec::new();
        loop {
            let n = recv(self.sock.as_raw_fd(), &mut self.buf, MsgFlags::MSG_TRUNC)
                .map_err(io::Error::from)?;
            if n > self.buf.len() {
                return Err(Error::Decode(format!("a datagram of {n} bytes")));
            }
            for frame in frames(&self.buf[..n]) {
                let frame = frame?;
                if frame.seq() != seq || frame.message_type() == NLMSG_NOOP {
                    continue;
                }
                if let Some(status) = frame.status() {
                    return status.map(|()| out);
                }
                out.push(frame.decode()?);
                if first_answer_ends {
                    return Ok(out);
                }
            }
        }
    }
}

impl<F: Family> AsFd for Socket<F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl<F: Family> AsRawFd for Socket<F> {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// A netfilter attribute; its value is encoded by the subsystem (big-endian numbers,
/// packed structs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfAttr {
    /// The type, without the nested and byte-order flags.
    pub kind: u16,
    pub value: Vec<u8>,
}

impl NfAttr {
    pub fn new(kind: u16, value: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }
}

impl Nla for NfAttr {
    fn value_len(&self) -> usize {
        self.value.len()
    }
    fn kind(&self) -> u16 {
        self.kind
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.value);
    }
}

/// The attributes of a message body (after its family header, `nfgenmsg` for
/// netfilter) as views: (type without flags, value). Stops at the first malformed one.
pub fn attrs(body: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let a = NlaBuffer::new_checked(rest).ok()?;
        let (kind, len) = (a.kind(), usize::from(a.length()));
        let value = &rest[NLA_HEADER_SIZE..len];
        rest = rest.get(align(len)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

/// A `NETLINK_NETFILTER` message: `struct nfgenmsg` and attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfMessage {
    /// `(subsystem << 8) | message`.
    pub message_type: u16,
    /// `nfgen_family` (`AF_*`).
    pub family: u8,
    /// `res_id` (network order on the wire): the queue number for nfqueue.
    pub res_id: u16,
    pub attrs: Vec<NfAttr>,
}

impl NfMessage {
    pub fn new(subsystem: u8, message: u8, family: u8, res_id: u16) -> Self {
        Self {
            message_type: (u16::from(subsystem) << 8) | u16::from(message),
            family,
            res_id,
            attrs: Vec::new(),
        }
    }

    pub fn attr(mut self, kind: u16, value: impl Into<Vec<u8>>) -> Self {
        self.attrs.push(NfAttr::new(kind, value));
        self
    }

    /// The value of the first attribute of type `kind`.
    pub fn get(&self, kind: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|a| a.kind == kind)
            .map(|a| a.value.as_slice())
    }
}

impl NetlinkSerializable for NfMessage {
    fn message_type(&self) -> u16 {
        self.message_type
    }

    fn buffer_len(&self) -> usize {
        NFGENMSG_LEN + self.attrs.as_slice().buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = 0; // NFNETLINK_V0
        buffer[2..4].copy_from_slice(&self.res_id.to_be_bytes());
        self.attrs.as_slice().emit(&mut buffer[NFGENMSG_LEN..]);
    }
}

impl NetlinkDeserializable for NfMessage {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        let Some(body) = payload.get(NFGENMSG_LEN..) else {
            return Err(DecodeError::from("a netfilter message without nfgenmsg"));
        };
        let mut attrs = Vec::new();
        for a in NlasIterator::new(body) {
            let a: NlaBuffer<&[u8]> = a?;
            attrs.push(NfAttr::new(a.kind(), a.value()));
        }
        Ok(Self {
            message_type: header.message_type,
            family: payload[0],
            res_id: u16::from_be_bytes([payload[2], payload[3]]),
            attrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sock::abi_u8;

    fn message(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(
            &u32::try_from(NLMSG_HDRLEN + payload.len())
                .unwrap()
                .to_ne_bytes(),
        );
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align(m.len()), 0);
        m
    }

    fn error(seq: u32, code: i32) -> Vec<u8> {
        let mut body = code.to_ne_bytes().to_vec();
        // The request's header, echoed.
        body.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        message(NLMSG_ERROR, 0, seq, &body)
    }

    #[test]
    fn a_netfilter_message_round_trips() {
        let msg = NfMessage::new(3, 2, const { abi_u8(libc::AF_UNSPEC) }, 0x0105)
            .attr(1, [1u8, 0, 0, 0])
            .attr(2, [0u8, 0, 0xff, 0xff, 2]);
        let bytes = encode(msg.clone(), NLM_F_REQUEST | NLM_F_ACK, 9);
        // Header, nfgenmsg, an 8-byte attribute, a 9-byte one padded to 12.
        assert_eq!(bytes.len(), NLMSG_HDRLEN + NFGENMSG_LEN + 8 + 12);
        assert_eq!(&bytes[NLMSG_HDRLEN + 2..NLMSG_HDRLEN + 4], &[0x01, 0x05]);
        let frames: Vec<_> = frames(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 1);
        let f = frames[0];
        assert_eq!(f.message_type(), 0x0302);
        assert_eq!(f.flags(), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(f.seq(), 9);
        assert_eq!(f.bytes(), &bytes[..]);
        assert!(f.status().is_none());
        assert_eq!(f.decode::<NfMessage>().unwrap(), msg);
        let attrs: Vec<_> = attrs(&f.payload()[NFGENMSG_LEN..]).collect();
        assert_eq!(attrs[1], (2, &[0u8, 0, 0xff, 0xff, 2][..]));
    }

    #[test]
    fn errors_map_to_errno_and_zero_is_an_ack() {
        let mut d = error(1, 0);
        d.extend(error(2, -libc::EEXIST));
        d.extend(message(NLMSG_DONE, 0, 3, &(-libc::EINTR).to_ne_bytes()));
        d.extend(message(NLMSG_DONE, 0, 4, &[]));
        let st: Vec<_> = frames(&d).map(|f| f.unwrap().status().unwrap()).collect();
        assert!(st[0].is_ok());
        assert!(matches!(st[1], Err(Error::Kernel { errno }) if errno == libc::EEXIST));
        assert!(matches!(st[2], Err(Error::Kernel { errno }) if errno == libc::EINTR));
        assert!(st[3].is_ok());
        let io: io::Error = Error::Kernel {
            errno: libc::ENODEV,
        }
        .into();
        assert_eq!(io.raw_os_error(), Some(libc::ENODEV));
        assert_eq!(
            Error::Kernel {
                errno: libc::ENODEV
            }
            .to_string(),
            "No such device"
        );
    }

    #[test]
    fn a_multi_part_dump_is_split_at_alignment() {
        // Two answers of odd lengths, then the dump's end, in one datagram.
        let mut d = message(0x0300, 2, 5, &[0, 0, 0, 0, 9, 0, 1, 0, 0, 0, 0, 7, 1]);
        d.extend(message(0x0300, 2, 5, &[0, 0, 0, 0, 5, 0, 2, 0, 9]));
        d.extend(message(NLMSG_DONE, 2, 5, &0i32.to_ne_bytes()));
        let f: Vec<_> = frames(&d).collect::<Result<_, _>>().unwrap();
        assert_eq!(f.len(), 3);
        let a: NfMessage = f[0].decode().unwrap();
        assert_eq!(a.get(1), Some(&[0u8, 0, 0, 7, 1][..]));
        let b: NfMessage = f[1].decode().unwrap();
        assert_eq!(b.get(2), Some(&[9u8][..]));
        assert!(f[2].status().unwrap().is_ok());
        assert!(f[2].decode::<NfMessage>().is_err());
    }

    /// Against the kernel, read-only (a link dump needs no privilege): the dump ends at
    /// its DONE, a refusal is its errno, and answers to an abandoned request are skipped.
    #[test]
    fn requests_against_the_kernel() {
        use netlink_packet_route::RouteNetlinkMessage;
        use netlink_packet_route::link::LinkMessage;

        /// `NETLINK_ROUTE` with `netlink-packet-route`'s messages as they come.
        #[derive(Debug)]
        struct Route;
        impl Family for Route {
            const PROTOCOL: isize = netlink_sys::protocols::NETLINK_ROUTE;
            type Message = RouteNetlinkMessage;
        }

        let get_links = || RouteNetlinkMessage::GetLink(LinkMessage::default());
        let is_lo = |m: &RouteNetlinkMessage| matches!(m, RouteNetlinkMessage::NewLink(l) if l.header.index == 1);
        let mut sock = Socket::<Route>::open().unwrap();
        let links = sock.request(get_links(), NLM_F_DUMP).unwrap();
        assert!(links.iter().any(is_lo), "{links:?}");

        let refuse = || {
            let mut missing = LinkMessage::default();
            missing.header.index = 0x7fff_fff0;
            RouteNetlinkMessage::GetLink(missing)
        };
        let refused = sock.request(refuse(), NLM_F_ACK).unwrap_err();
        assert!(matches!(refused, Error::Kernel { errno } if errno == libc::ENODEV));

        // (A dump cannot be abandoned: the kernel refuses the next one with EBUSY.)
        let mut lo = LinkMessage::default();
        lo.header.index = 1;
        let abandoned = RouteNetlinkMessage::GetLink(lo);
        sock.send(abandoned, NLM_F_ACK, sock.seq.wrapping_add(100))
            .unwrap();
        let again = sock.request(get_links(), NLM_F_DUMP).unwrap();
        assert_eq!(again.iter().filter(|m| is_lo(m)).count(), 1);
        // Nothing of either dump is left to be taken for the next request's answer.
        let refused = sock.request(refuse(), NLM_F_ACK).unwrap_err();
        assert!(matches!(refused, Error::Kernel { errno } if errno == libc::ENODEV));
    }

    #[test]
    fn a_bad_length_is_an_error_and_ends_the_datagram() {
        let mut two = message(NLMSG_NOOP, 0, 0, &[]);
        two.extend(message(NLMSG_NOOP, 0, 0, &[]));
        two[16..20].copy_from_slice(&99u32.to_ne_bytes());
        let mut it = frames(&two);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
        // A length shorter than the header.
        two[16..20].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(frames(&two).filter(Result::is_err).count(), 1);
        // Every truncation of a message is an error, never a panic.
        let m = error(1, -libc::ENOENT);
        for cut in 1..m.len() {
            for f in frames(&m[..cut]).flatten() {
                let _ = f.status();
            }
        }
        assert!(frames(&m[..m.len() - 1]).next().unwrap().is_err());
    }
}
