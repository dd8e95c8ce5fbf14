//! `plexus_bytes`: an immutable byte buffer, copied from C, wrapping C memory without a copy,
//! or received from the network and read in place.

use std::ffi::c_void;

use bytes::Bytes;

use crate::boundary::boundary;
use crate::error::{Error, PLEXUS_OK, plexus_result};
use crate::handle::{BoxHandle, bytes_arg, check_out, write_out};

/// An immutable byte buffer: a message to send, or a message received. Owned by the caller,
/// who frees it with `plexus_bytes_free`. Reading it from several threads at once is safe.
pub struct plexus_bytes {
    _private: [u8; 0],
}

impl BoxHandle for plexus_bytes {
    type Rust = Bytes;
    const NAME: &'static str = "bytes";
}

/// The release callback of `plexus_bytes_wrap`: called once with its `context`.
pub type plexus_release_fn = Option<unsafe extern "C" fn(context: *mut c_void)>;

/// Caller memory lent to plexus; dropping it runs the release callback, exactly once.
struct Foreign {
    ptr: *const u8,
    len: usize,
    release: plexus_release_fn,
    context: *mut c_void,
}

// SAFETY: plexus_bytes_wrap's contract: the memory stays valid and unchanged until release
// runs, and release may be called from any thread.
unsafe impl Send for Foreign {}
// SAFETY: the memory is only read, and its owner promised it does not change meanwhile.
unsafe impl Sync for Foreign {}

impl AsRef<[u8]> for Foreign {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: plexus_bytes_wrap checked ptr is not NULL when len > 0; the caller keeps
        // the memory valid until release runs, which is after the last read (on drop).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            // SAFETY: the callback and context came together from the caller, who said it is
            // safe to call once from any thread; `take` makes sure it runs only once.
            unsafe { release(self.context) };
        }
    }
}

/// Reads a `plexus_bytes` argument as a shared reference to its buffer (no copy).
///
/// # Safety
/// `ptr` is NULL or a live `plexus_bytes`.
pub(crate) unsafe fn bytes_ref(ptr: *const plexus_bytes) -> crate::error::Result<Bytes> {
    // SAFETY: per this function's contract.
    Ok(unsafe { plexus_bytes::as_ref(ptr) }?.clone())
}

/// Copies `len` bytes at `data` into a new buffer.
///
/// `data` may be NULL when `len` is 0. The copy is owned by the caller: free it with
/// `plexus_bytes_free`. Thread-safe.
///
/// Returns PLEXUS_OK and writes `*out`; PLEXUS_ERR_NULL_ARGUMENT if `out` is NULL or `data` is
/// NULL with `len` above 0.
///
/// # Safety
/// `data` is valid for reads of `len` bytes; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_bytes_copy(
    data: *const u8,
    len: usize,
    out: *mut *mut plexus_bytes,
) -> plexus_result {
    boundary("plexus_bytes_copy", || {
        check_out(out, "out")?;
        // SAFETY: the caller guarantees data is valid for len bytes.
        let data = unsafe { bytes_arg(data, len, "data") }?;
        let bytes = Bytes::copy_from_slice(data);
        // SAFETY: out was checked and is valid for a write.
        unsafe { write_out(out, "out", plexus_bytes::into_raw(bytes)) }?;
        Ok(PLEXUS_OK)
    })
}

/// Wraps caller memory without copying it, to send it as a message.
///
/// Takes ownership of the memory, even on failure: plexus calls `release(context)` exactly
/// once, when neither the returned buffer nor any message sent from it needs the memory any
/// more (after `plexus_bytes_free` and after the last send using it completed). On failure
/// `release` runs before this function returns. `release` may be NULL (static memory). It may
/// run on any thread, including a plexus worker thread, so it must be thread-safe, must not
/// block and must not call plexus functions.
///
/// The memory must stay valid and unchanged until `release` runs. The buffer is owned by the
/// caller: free it with `plexus_bytes_free`. Thread-safe.
///
/// Returns PLEXUS_OK and writes `*out`; PLEXUS_ERR_NULL_ARGUMENT if `out` is NULL or `data` is
/// NULL with `len` above 0.
///
/// # Safety
/// `data` is valid for reads of `len` bytes until `release` runs; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_bytes_wrap(
    data: *const u8,
    len: usize,
    release: plexus_release_fn,
    context: *mut c_void,
    out: *mut *mut plexus_bytes,
) -> plexus_result {
    boundary("plexus_bytes_wrap", || {
        // Owns the memory from here on: any early return releases it.
        let foreign = Foreign {
            ptr: data,
            len,
            release,
            context,
        };
        check_out(out, "out")?;
        if data.is_null() && len > 0 {
            return Err(Error::null("data"));
        }
        if len > isize::MAX as usize {
            return Err(Error::invalid(format!("data: length {len} is too large")));
        }
        let bytes = Bytes::from_owner(foreign);
        // SAFETY: out was checked and is valid for a write.
        unsafe { write_out(out, "out", plexus_bytes::into_raw(bytes)) }?;
        Ok(PLEXUS_OK)
    })
}

/// Reads a buffer in place: writes its start to `*data` and its length to `*len`.
///
/// The pointer is borrowed: valid until `plexus_bytes_free(bytes)`; it may be NULL when the
/// length is 0. A received message is read this way without a copy. Thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if any argument is NULL.
///
/// # Safety
/// `bytes` is a live buffer; `data` and `len` are valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_bytes_data(
    bytes: *const plexus_bytes,
    data: *mut *const u8,
    len: *mut usize,
) -> plexus_result {
    boundary("plexus_bytes_data", || {
        // SAFETY: the caller passes a live buffer or NULL.
        let bytes = unsafe { plexus_bytes::as_ref(bytes) }?;
        check_out(data, "data")?;
        check_out(len, "len")?;
        // SAFETY: both outputs were checked and are valid for writes.
        unsafe {
            write_out(data, "data", bytes.as_ptr())?;
            write_out(len, "len", bytes.len())?;
        }
        Ok(PLEXUS_OK)
    })
}

/// Frees a buffer. Wrapped memory is released once plexus is done with it too.
/// NULL is a no-op. Not to be called while another thread reads the buffer.
///
/// # Safety
/// `bytes` is NULL or a live buffer, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_bytes_free(bytes: *mut plexus_bytes) {
    boundary("plexus_bytes_free", || {
        // SAFETY: the caller gives up a live buffer or NULL.
        drop(unsafe { plexus_bytes::take(bytes) });
        Ok(())
    })
}
