//! Why code generation failed, with the file, line and column of a problem in a `.proto`.

use std::fmt;

use miette::Diagnostic;

/// A failed code generation: a `.proto` that does not parse or check (a syntax error, an
/// unknown type, a missing import), or a file that could not be written.
///
/// `Display` and `Debug` both print `file:line:column: message` lines, so a build script that
/// returns it from `main` shows where the problem is.
pub struct Error {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// A protox error, located through its diagnostic labels.
    pub(crate) fn proto(err: protox::Error) -> Error {
        Error {
            message: locate(&err),
            source: Some(Box::new(err)),
        }
    }

    /// prost-build's failure to write the code.
    pub(crate) fn io(err: std::io::Error) -> Error {
        Error {
            message: format!("generating code: {err}"),
            source: Some(Box::new(err)),
        }
    }

    /// Anything else, as text.
    pub(crate) fn other(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            source: None,
        }
    }
}

/// `file:line:column: message` for each labelled span (lines and columns from 1), or
/// `file: message` when protox knows only the file.
fn locate(err: &protox::Error) -> String {
    let message = err.to_string();
    let mut located = Vec::new();
    if let (Some(source), Some(labels)) = (err.source_code(), err.labels()) {
        for label in labels {
            let Ok(span) = source.read_span(label.inner(), 0, 0) else {
                continue;
            };
            let file = span.name().or(err.file()).unwrap_or("<input>");
            let what = match label.label() {
                Some(text) if !message.contains(text) => format!("{message} ({text})"),
                _ => message.clone(),
            };
            located.push(format!(
                "{file}:{}:{}: {what}",
                span.line() + 1,
                span.column() + 1
            ));
        }
    }
    if located.is_empty() {
        match err.file() {
            Some(file) => format!("{file}: {message}"),
            None => message,
        }
    } else {
        located.join("\n")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // What `main` returning an error prints: the located message, not a struct dump.
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
