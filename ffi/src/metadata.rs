//! `plexus_metadata`: call metadata (ASCII and `-bin` keys), to send and as received.

use std::ffi::{CString, c_char};
use std::sync::OnceLock;

use core_plexus::MetadataValue;

use crate::boundary::boundary;
use crate::error::{Error, PLEXUS_OK, plexus_result};
use crate::handle::{BoxHandle, bytes_arg, check_out, str_arg, write_out};

/// A list of metadata entries: request metadata to send, or the initial or trailing metadata
/// of a response. Owned by the caller unless a function says it is borrowed; free with
/// `plexus_metadata_free`. Not thread-safe while being modified; reading from several
/// threads at once is safe.
pub struct plexus_metadata {
    _private: [u8; 0],
}

/// One metadata entry, as read by `plexus_metadata_get_entry`. Its pointers are borrowed from the
/// metadata and valid until it is modified or freed.
#[repr(C)]
pub struct plexus_metadata_entry {
    /// The key, lower-case, NUL-terminated.
    pub key: *const c_char,
    /// Length of the key in bytes, without the NUL.
    pub key_len: usize,
    /// The value: ASCII text (followed by a NUL, not counted in `value_len`) for ordinary
    /// keys, the decoded bytes for keys ending in `-bin`.
    pub value: *const u8,
    /// Length of the value in bytes.
    pub value_len: usize,
    /// Whether the key ends in `-bin` and the value is binary.
    pub binary: bool,
}

impl BoxHandle for plexus_metadata {
    type Rust = Metadata;
    const NAME: &'static str = "metadata";
}

/// Metadata as core keeps it, plus the entries C reads, built on first read.
#[derive(Default)]
pub(crate) struct Metadata {
    core: core_plexus::Metadata,
    entries: OnceLock<Vec<Entry>>,
}

struct Entry {
    key: CString,
    /// The value; ASCII values carry a trailing NUL that `len` does not count.
    value: Vec<u8>,
    len: usize,
    binary: bool,
}

impl Metadata {
    pub(crate) fn from_core(core: core_plexus::Metadata) -> Metadata {
        Metadata {
            core,
            entries: OnceLock::new(),
        }
    }

    pub(crate) fn core(&self) -> &core_plexus::Metadata {
        &self.core
    }

    /// The metadata as core keeps it.
    pub(crate) fn into_core(self) -> core_plexus::Metadata {
        self.core
    }

    fn entries(&self) -> &[Entry] {
        self.entries.get_or_init(|| {
            self.core
                .iter()
                .map(|(key, value)| {
                    let key = CString::new(key).unwrap_or_default();
                    match value {
                        MetadataValue::Ascii(v) => {
                            let mut value = v.as_bytes().to_vec();
                            let len = value.len();
                            value.push(0);
                            Entry {
                                key,
                                value,
                                len,
                                binary: false,
                            }
                        }
                        MetadataValue::Binary(v) => Entry {
                            key,
                            len: v.len(),
                            value: v.to_vec(),
                            binary: true,
                        },
                    }
                })
                .collect()
        })
    }

    fn changed(&mut self) {
        self.entries.take();
    }
}

/// Creates an empty metadata list, owned by the caller (free with `plexus_metadata_free`).
///
/// Returns PLEXUS_OK and writes `*out`; PLEXUS_ERR_NULL_ARGUMENT if `out` is NULL.
///
/// # Safety
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_metadata_new(out: *mut *mut plexus_metadata) -> plexus_result {
    boundary("plexus_metadata_new", || {
        check_out(out, "out")?;
        // SAFETY: out was checked and is writable.
        unsafe { write_out(out, "out", plexus_metadata::into_raw(Metadata::default())) }?;
        Ok(PLEXUS_OK)
    })
}

/// Appends an ASCII entry. `key` is NUL-terminated: lower-case `0-9 a-z _ - .`, not starting
/// with `grpc-`, not ending in `-bin`; `value` is NUL-terminated printable ASCII. A key may
/// hold several values, kept in order. Both strings are copied. Not thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument; PLEXUS_ERR_INVALID_UTF8
/// for a string that is not UTF-8; PLEXUS_ERR_INVALID_ARGUMENT for a bad key or value (the
/// metadata is unchanged).
///
/// # Safety
/// `metadata` is live; `key` and `value` are NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_metadata_append(
    metadata: *mut plexus_metadata,
    key: *const c_char,
    value: *const c_char,
) -> plexus_result {
    boundary("plexus_metadata_append", || {
        // SAFETY: the caller passes live objects or NULL (checked).
        let md = unsafe { plexus_metadata::as_mut(metadata) }?;
        // SAFETY: as above.
        let (key, value) = unsafe { (str_arg(key, "key")?, str_arg(value, "value")?) };
        md.core
            .append(key, value)
            .map_err(|s| Error::invalid(s.message().to_string()))?;
        md.changed();
        Ok(PLEXUS_OK)
    })
}

/// Appends a binary entry: `key` (NUL-terminated, ending in `-bin`) and `len` bytes at
/// `value` (NULL allowed when `len` is 0), copied and sent base64-encoded. Not thread-safe.
/// `grpc-status-details-bin`, the one `grpc-` key allowed, carries a status's details in
/// the trailers given to `plexus_server_call_finish`.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument; PLEXUS_ERR_INVALID_UTF8
/// for a key that is not UTF-8; PLEXUS_ERR_INVALID_ARGUMENT for a bad key.
///
/// # Safety
/// `metadata` is live; `key` is a NUL-terminated string; `value` is valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_metadata_append_bin(
    metadata: *mut plexus_metadata,
    key: *const c_char,
    value: *const u8,
    len: usize,
) -> plexus_result {
    boundary("plexus_metadata_append_bin", || {
        // SAFETY: the caller passes live objects or NULL (checked).
        let md = unsafe { plexus_metadata::as_mut(metadata) }?;
        // SAFETY: as above; value is valid for len bytes.
        let (key, value) = unsafe { (str_arg(key, "key")?, bytes_arg(value, len, "value")?) };
        md.core
            .append_bin(key, value)
            .map_err(|s| Error::invalid(s.message().to_string()))?;
        md.changed();
        Ok(PLEXUS_OK)
    })
}

/// Writes the number of entries (a key with two values counts twice) to `*len`. Thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument.
///
/// # Safety
/// `metadata` is live; `len` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_metadata_len(
    metadata: *const plexus_metadata,
    len: *mut usize,
) -> plexus_result {
    boundary("plexus_metadata_len", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        let md = unsafe { plexus_metadata::as_ref(metadata) }?;
        // SAFETY: len is NULL (checked) or writable.
        unsafe { write_out(len, "len", md.entries().len()) }?;
        Ok(PLEXUS_OK)
    })
}

/// Reads entry `index` (0 to len - 1) into `*entry`, in order. The entry's pointers are
/// borrowed: valid until the metadata is modified or freed. Thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument;
/// PLEXUS_ERR_INVALID_ARGUMENT when `index` is out of range.
///
/// # Safety
/// `metadata` is live; `entry` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_metadata_get_entry(
    metadata: *const plexus_metadata,
    index: usize,
    entry: *mut plexus_metadata_entry,
) -> plexus_result {
    boundary("plexus_metadata_get_entry", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        let md = unsafe { plexus_metadata::as_ref(metadata) }?;
        check_out(entry, "entry")?;
        let entries = md.entries();
        let e = entries.get(index).ok_or_else(|| {
            Error::invalid(format!(
                "index {index} is out of range (the metadata has {} entries)",
                entries.len()
            ))
        })?;
        let out = plexus_metadata_entry {
            key: e.key.as_ptr(),
            key_len: e.key.as_bytes().len(),
            value: e.value.as_ptr(),
            value_len: e.len,
            binary: e.binary,
        };
        // SAFETY: entry was checked and is writable.
        unsafe { write_out(entry, "entry", out) }?;
        Ok(PLEXUS_OK)
    })
}

/// Finds the first value of `key` (NUL-terminated): writes it to `*value` and its length to
/// `*len`, or NULL and 0 when the key is absent. ASCII values are NUL-terminated; `-bin`
/// values are the decoded bytes. The value is borrowed: valid until the metadata is modified
/// or freed. Thread-safe.
///
/// Returns PLEXUS_OK (found or not); PLEXUS_ERR_NULL_ARGUMENT for a NULL argument;
/// PLEXUS_ERR_INVALID_UTF8 for a key that is not UTF-8.
///
/// # Safety
/// `metadata` is live; `key` is a NUL-terminated string; `value` and `len` are writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_metadata_get(
    metadata: *const plexus_metadata,
    key: *const c_char,
    value: *mut *const u8,
    len: *mut usize,
) -> plexus_result {
    boundary("plexus_metadata_get", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        let md = unsafe { plexus_metadata::as_ref(metadata) }?;
        // SAFETY: key is a C string or NULL (checked).
        let key = unsafe { str_arg(key, "key") }?;
        check_out(value, "value")?;
        check_out(len, "len")?;
        let found = md
            .entries()
            .iter()
            .find(|e| e.key.as_bytes() == key.as_bytes())
            .map_or((std::ptr::null(), 0), |e| (e.value.as_ptr(), e.len));
        // SAFETY: value and len were checked and are writable.
        unsafe {
            write_out(value, "value", found.0)?;
            write_out(len, "len", found.1)?;
        }
        Ok(PLEXUS_OK)
    })
}

/// Frees a metadata list the caller owns. NULL is a no-op. Never pass borrowed metadata
/// (from a status).
///
/// # Safety
/// `metadata` is NULL or live and owned by the caller, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_metadata_free(metadata: *mut plexus_metadata) {
    boundary("plexus_metadata_free", || {
        // SAFETY: the caller gives up a live object or NULL.
        drop(unsafe { plexus_metadata::take(metadata) });
        Ok(())
    })
}
