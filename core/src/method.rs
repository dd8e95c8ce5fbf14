//! What a method is, independent of its message types: its path and which of the four gRPC
//! kinds it is. `plexus-build` writes one [`MethodDescriptor`] constant per rpc.

use std::fmt;

/// Which side streams: the four kinds of gRPC method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    BidiStreaming,
}

impl MethodKind {
    /// The kind with these streaming flags, as a `.proto` file declares them.
    pub const fn from_streaming(client_streaming: bool, server_streaming: bool) -> MethodKind {
        match (client_streaming, server_streaming) {
            (false, false) => MethodKind::Unary,
            (false, true) => MethodKind::ServerStreaming,
            (true, false) => MethodKind::ClientStreaming,
            (true, true) => MethodKind::BidiStreaming,
        }
    }

    /// Whether the client sends a stream of requests.
    pub const fn client_streaming(self) -> bool {
        matches!(
            self,
            MethodKind::ClientStreaming | MethodKind::BidiStreaming
        )
    }

    /// Whether the server sends a stream of responses.
    pub const fn server_streaming(self) -> bool {
        matches!(
            self,
            MethodKind::ServerStreaming | MethodKind::BidiStreaming
        )
    }
}

impl fmt::Display for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MethodKind::Unary => "unary",
            MethodKind::ServerStreaming => "server streaming",
            MethodKind::ClientStreaming => "client streaming",
            MethodKind::BidiStreaming => "bidi streaming",
        })
    }
}

/// A method's full path (`/package.Service/Method`) and kind, for routing, interceptors and
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodDescriptor {
    /// `/package.Service/Method`, as sent in `:path`.
    pub path: &'static str,
    /// Which side streams.
    pub kind: MethodKind,
}

impl MethodDescriptor {
    /// A descriptor for `path` of `kind`.
    pub const fn new(path: &'static str, kind: MethodKind) -> MethodDescriptor {
        MethodDescriptor { path, kind }
    }

    /// The service's full name (`package.Service`), or "" when the path is not of the form
    /// `/service/method`.
    pub fn service(&self) -> &'static str {
        self.split().map_or("", |(service, _)| service)
    }

    /// The method's name as in the `.proto` file (`Method`), or "" when the path is not of the
    /// form `/service/method`.
    pub fn method(&self) -> &'static str {
        self.split().map_or("", |(_, method)| method)
    }

    fn split(&self) -> Option<(&'static str, &'static str)> {
        self.path.strip_prefix('/')?.split_once('/')
    }
}

impl fmt::Display for MethodDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_streaming_flags() {
        for kind in [
            MethodKind::Unary,
            MethodKind::ServerStreaming,
            MethodKind::ClientStreaming,
            MethodKind::BidiStreaming,
        ] {
            let again =
                MethodKind::from_streaming(kind.client_streaming(), kind.server_streaming());
            assert_eq!(again, kind);
        }
    }

    #[test]
    fn a_descriptor_names_its_service_and_method() {
        let d = MethodDescriptor::new("/routeguide.RouteGuide/GetFeature", MethodKind::Unary);
        assert_eq!(d.service(), "routeguide.RouteGuide");
        assert_eq!(d.method(), "GetFeature");
        assert_eq!(d.to_string(), "/routeguide.RouteGuide/GetFeature (unary)");
        let odd = MethodDescriptor::new("nothing", MethodKind::Unary);
        assert_eq!((odd.service(), odd.method()), ("", ""));
    }
}
