//! Small helpers shared by the socket wrappers.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd};

/// A libc return value: negative means `errno`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `setsockopt` with an `int` value.
pub(crate) fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open socket, the option value points at a live c_int and the
    // length passed is its size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            socklen_of::<libc::c_int>(),
        )
    })
    .map(drop)
}

/// The size of `T` as a socket-address or option length; checked when compiled.
pub(crate) const fn socklen_of<T>() -> libc::socklen_t {
    const { assert!(size_of::<T>() <= libc::socklen_t::MAX as usize) };
    #[allow(clippy::cast_possible_truncation, reason = "asserted above")]
    let len = size_of::<T>() as libc::socklen_t;
    len
}

/// A libc `c_int` constant in a `u8` field of the kernel's ABI (a family, a command);
/// called in a `const` block, so a value out of range fails the build.
pub(crate) const fn abi_u8(value: libc::c_int) -> u8 {
    assert!(value >= 0 && value <= u8::MAX as libc::c_int);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "asserted above"
    )]
    let narrow = value as u8;
    narrow
}

/// A libc `c_int` constant in a `u16` field of the kernel's ABI (a family, an
/// ethertype, a BPF opcode); called in a `const` block, so a value out of range fails
/// the build.
pub(crate) const fn abi_u16(value: libc::c_int) -> u16 {
    assert!(value >= 0 && value <= u16::MAX as libc::c_int);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "asserted above"
    )]
    let narrow = value as u16;
    narrow
}

/// An open descriptor in a `u32` field of the kernel's ABI (`bpf_attr`, netlink
/// attributes): an open descriptor is never negative.
pub(crate) fn fd_u32(fd: impl AsRawFd) -> u32 {
    u32::try_from(fd.as_raw_fd()).expect("an open file descriptor is non-negative")
}

/// An interface index as the kernel's `int`; one above `i32::MAX` names no device.
pub(crate) fn ifindex_c(index: u32) -> io::Result<libc::c_int> {
    libc::c_int::try_from(index).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("ifindex {index} is out of the kernel's range"),
        )
    })
}
