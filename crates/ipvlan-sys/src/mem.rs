//! The daemon's own memory.

/// Gives the heap's free memory back to the kernel (glibc's `malloc_trim`). After a
/// burst of large short-lived allocations (a big table's JSON listing, parsed) the
/// allocator keeps the freed pages; this brings the resident size back down. Does
/// nothing where the C library is not glibc.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only rearranges glibc's own free lists;
    // it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
