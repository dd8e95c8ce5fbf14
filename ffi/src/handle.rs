//! Opaque handles: every conversion between a Rust value and the pointer C holds lives here.
//!
//! A handle type is declared as `pub struct plexus_x { _private: [u8; 0] }` (no `repr(C)`, so
//! cbindgen emits an opaque `typedef struct plexus_x plexus_x;`) and tied to its Rust type by
//! [`BoxHandle`] (exclusively owned, `*mut`) or [`ArcHandle`] (shared, `*const`).

use std::sync::Arc;

use crate::error::{Error, Result};

/// A handle owned by exactly one party at a time: `Box<Self::Rust>` behind a `*mut`.
pub(crate) trait BoxHandle: Sized {
    /// The Rust value behind the handle.
    type Rust;
    /// The argument name used in "must not be NULL" errors.
    const NAME: &'static str;

    /// Gives `value` to C.
    fn into_raw(value: Self::Rust) -> *mut Self {
        Box::into_raw(Box::new(value)).cast()
    }

    /// Borrows the value behind `ptr`.
    ///
    /// # Safety
    /// `ptr` is NULL or came from [`BoxHandle::into_raw`] and was not freed; nobody holds a
    /// mutable borrow for the lifetime `'a`.
    unsafe fn as_ref<'a>(ptr: *const Self) -> Result<&'a Self::Rust> {
        // SAFETY: per this function's contract, a non-NULL ptr points to a live Self::Rust.
        unsafe { ptr.cast::<Self::Rust>().as_ref() }.ok_or_else(|| Error::null(Self::NAME))
    }

    /// A borrowed handle to `value`, for C to read while `value` lives (never freed by C).
    fn borrow_raw(value: &Self::Rust) -> *const Self {
        let ptr: *const Self::Rust = value;
        ptr.cast()
    }

    /// Mutably borrows the value behind `ptr`.
    ///
    /// # Safety
    /// As [`BoxHandle::as_ref`], and no other borrow exists for `'a`.
    unsafe fn as_mut<'a>(ptr: *mut Self) -> Result<&'a mut Self::Rust> {
        // SAFETY: per this function's contract.
        unsafe { ptr.cast::<Self::Rust>().as_mut() }.ok_or_else(|| Error::null(Self::NAME))
    }

    /// Takes the value back from C; NULL gives `None`.
    ///
    /// # Safety
    /// `ptr` is NULL or came from [`BoxHandle::into_raw`] and was not freed; C no longer uses it.
    unsafe fn take(ptr: *mut Self) -> Option<Box<Self::Rust>> {
        if ptr.is_null() {
            return None;
        }
        // SAFETY: per this function's contract, ptr is a live Box<Self::Rust> given to C.
        Some(unsafe { Box::from_raw(ptr.cast::<Self::Rust>()) })
    }
}

/// A handle shared by reference count: `Arc<Self::Rust>` behind a `*const`. Each handle C
/// holds is one strong count, released by the type's `_free`.
pub(crate) trait ArcHandle: Sized {
    /// The Rust value behind the handle.
    type Rust;
    /// The argument name used in "must not be NULL" errors.
    const NAME: &'static str;

    /// Gives one reference to C.
    fn into_raw(value: Arc<Self::Rust>) -> *const Self {
        Arc::into_raw(value).cast()
    }

    /// Borrows the value behind `ptr`.
    ///
    /// # Safety
    /// `ptr` is NULL or came from [`ArcHandle::into_raw`] and was not freed for `'a`.
    unsafe fn as_ref<'a>(ptr: *const Self) -> Result<&'a Self::Rust> {
        // SAFETY: per this function's contract, a non-NULL ptr points into a live Arc.
        unsafe { ptr.cast::<Self::Rust>().as_ref() }.ok_or_else(|| Error::null(Self::NAME))
    }

    /// A new strong reference to the value behind `ptr`, for work that outlives the call.
    ///
    /// # Safety
    /// As [`ArcHandle::as_ref`].
    unsafe fn clone_arc(ptr: *const Self) -> Result<Arc<Self::Rust>> {
        if ptr.is_null() {
            return Err(Error::null(Self::NAME));
        }
        let ptr = ptr.cast::<Self::Rust>();
        // SAFETY: ptr came from Arc::into_raw and C still holds that reference, so the count
        // is at least one; we add one for the Arc we return.
        unsafe {
            Arc::increment_strong_count(ptr);
            Ok(Arc::from_raw(ptr))
        }
    }

    /// Releases C's reference; NULL gives `None`.
    ///
    /// # Safety
    /// `ptr` is NULL or came from [`ArcHandle::into_raw`]; C no longer uses this reference.
    unsafe fn take(ptr: *const Self) -> Option<Arc<Self::Rust>> {
        if ptr.is_null() {
            return None;
        }
        // SAFETY: per this function's contract, ptr is one reference C owned.
        Some(unsafe { Arc::from_raw(ptr.cast::<Self::Rust>()) })
    }
}

/// Writes `value` to the output parameter `out`.
///
/// # Safety
/// `out` is NULL (an error) or valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, what: &str, value: T) -> Result<()> {
    if out.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: per this function's contract, out is valid for writes.
    unsafe { out.write(value) };
    Ok(())
}

/// Checks that an output parameter is not NULL before any work is done.
pub(crate) fn check_out<T>(out: *mut T, what: &str) -> Result<()> {
    if out.is_null() {
        Err(Error::null(what))
    } else {
        Ok(())
    }
}

/// Reads a NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` is NULL (an error) or a NUL-terminated string that stays valid for `'a`.
pub(crate) unsafe fn str_arg<'a>(ptr: *const std::ffi::c_char, what: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: per this function's contract, ptr is a valid C string.
    let cstr = unsafe { std::ffi::CStr::from_ptr(ptr) };
    cstr.to_str().map_err(|e| {
        Error::new(
            crate::error::PLEXUS_ERR_INVALID_UTF8,
            format!("{what} is not valid UTF-8 (byte {})", e.valid_up_to()),
        )
    })
}

/// Reads a (pointer, length) byte argument; a NULL pointer is allowed only with length 0.
///
/// # Safety
/// `ptr` is NULL or valid for reads of `len` bytes for `'a`.
pub(crate) unsafe fn bytes_arg<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    if ptr.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Error::null(what));
    }
    if len > isize::MAX as usize {
        return Err(Error::invalid(format!("{what}: length {len} is too large")));
    }
    // SAFETY: per this function's contract, ptr is valid for len bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}
