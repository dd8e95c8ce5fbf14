//! The one boundary every exported function goes through: fork check, panic catch, and the
//! mapping of errors to a result code and the thread's last-error text.
//!
//! Each `extern "C"` function is written in plain Rust and hands its body to [`boundary`] as a
//! closure, so rustfmt and cbindgen see the real signature. A unit test scans `ffi/src` and
//! fails if an exported function's body does anything before calling it.

use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Error, PLEXUS_ERR_FORKED, PLEXUS_ERR_PANIC, Result, plexus_result};

/// What an exported function returns, and what it returns when it fails.
pub(crate) trait Ret: Sized {
    /// The return value for a failure with `code` (the text is already recorded).
    fn failure(code: plexus_result) -> Self;

    /// In a forked child of a process that had started the runtime: `Some(value)` to return
    /// without running the body, `None` to run it anyway (it touches no runtime state).
    fn in_forked_child() -> Option<Self>;
}

impl Ret for plexus_result {
    fn failure(code: plexus_result) -> Self {
        code
    }

    fn in_forked_child() -> Option<Self> {
        Some(PLEXUS_ERR_FORKED)
    }
}

/// `_free` functions: in a forked child they free nothing (the object may hold locks that a
/// parent thread held at fork time), so the memory is left to the process's exit.
impl Ret for () {
    fn failure(_: plexus_result) -> Self {}

    fn in_forked_child() -> Option<Self> {
        Some(())
    }
}

/// `plexus_last_error` and `plexus_result_name`: static or thread-local text, fine anywhere.
impl Ret for *const c_char {
    fn failure(_: plexus_result) -> Self {
        crate::error::last_error_ptr()
    }

    fn in_forked_child() -> Option<Self> {
        None
    }
}

/// Runs the body of the exported function `function`: refuses in a forked child, catches any
/// panic, and turns an error into its code with the text recorded for `plexus_last_error`.
pub(crate) fn boundary<R: Ret>(function: &'static str, body: impl FnOnce() -> Result<R>) -> R {
    if crate::runtime::forked() {
        if let Some(value) = R::in_forked_child() {
            crate::error::set_last_error(function, crate::runtime::FORKED_MESSAGE);
            return value;
        }
    }
    let failed = |error: Error| {
        crate::error::set_last_error(function, &error.message);
        R::failure(error.code)
    };
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => failed(error),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            // Dropping the payload could itself panic; leak it instead.
            std::mem::forget(payload);
            failed(Error::new(
                PLEXUS_ERR_PANIC,
                format!("internal error (a bug in plexus): {what}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{PLEXUS_ERR_INVALID_ARGUMENT, PLEXUS_OK};

    fn last() -> String {
        // SAFETY: last_error_ptr returns a valid NUL-terminated thread-local string.
        unsafe { std::ffi::CStr::from_ptr(crate::error::last_error_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn panics_become_a_code_and_text() {
        let code: plexus_result = boundary("plexus_test", || panic!("boom"));
        assert_eq!(code, PLEXUS_ERR_PANIC);
        assert!(
            last().contains("plexus_test") && last().contains("boom"),
            "{}",
            last()
        );
    }

    #[test]
    fn errors_become_a_code_and_text() {
        let code: plexus_result = boundary("plexus_test", || Err(Error::invalid("bad value 7")));
        assert_eq!(code, PLEXUS_ERR_INVALID_ARGUMENT);
        assert_eq!(last(), "plexus_test: bad value 7");
        let code: plexus_result = boundary("plexus_test", || Ok(PLEXUS_OK));
        assert_eq!(code, PLEXUS_OK);
    }

    /// Every exported function hands its whole body to `boundary`: the first statement of
    /// each `extern "C" fn` in ffi/src must be `boundary("<its name>", ...)`.
    #[test]
    fn every_exported_function_goes_through_the_boundary() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut checked = 0;
        let mut problems = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let attribute = concat!("#[unsafe(", "no_mangle)]");
            let exports = text.matches(attribute).count();
            let mut found = 0;
            for (at, _) in text.match_indices("extern \"C\" fn ") {
                let rest = &text[at + "extern \"C\" fn ".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                // Callback types (`Option<unsafe extern "C" fn(...)>`) have no name.
                if name.is_empty() {
                    continue;
                }
                // Private handlers given to the C library, not exported: each is listed here
                // with why it needs no boundary.
                if name == "on_fork_child" {
                    // runtime.rs: pthread_atfork's child handler, one atomic store.
                    continue;
                }
                found += 1;
                let body = &rest[rest.find('{').unwrap() + 1..];
                // rustfmt may break the call over lines: compare without whitespace.
                let first: String = body
                    .chars()
                    .take(300)
                    .filter(|c| !c.is_whitespace())
                    .collect();
                let expected = format!("boundary(\"{name}\",");
                if !first.starts_with(&expected) {
                    problems.push(format!(
                        "{}: {name} does not start with {expected}",
                        path.display()
                    ));
                }
            }
            if found != exports {
                problems.push(format!(
                    "{}: {exports} {attribute} items but {found} extern \"C\" fns",
                    path.display()
                ));
            }
            checked += found;
        }
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(checked > 50, "only {checked} exported functions found");
    }
}
