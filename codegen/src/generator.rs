//! The code for each `service`: a client module and a server module, written as Rust source
//! into the file prost-build writes for the service's package.
//!
//! Everything the generated code names is a full path (`::plexus::...`, `super::Message`), so
//! it compiles next to any message names the package has.

use std::fmt::Write as _;

use prost_build::{Comments, Method, Service, ServiceGenerator};

/// Names a generated client has before its rpcs: an rpc of the same name gets `_rpc` added
/// to its client method.
const CLIENT_OWN_METHODS: &[&str] = &[
    "new",
    "with_defaults",
    "channel",
    "defaults",
    "clone",
    "fmt",
];

/// Which halves to generate and where plexus is.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) client: bool,
    pub(crate) server: bool,
    /// The path generated code uses for the plexus crate (`::plexus`).
    pub(crate) plexus: String,
}

/// prost-build calls this once per service.
pub(crate) struct Generator {
    pub(crate) options: Options,
}

impl ServiceGenerator for Generator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let service = ServiceModel::new(&service, &self.options.plexus);
        if self.options.client {
            service.client(buf);
        }
        if self.options.server {
            service.server(buf);
        }
    }
}

/// A service with the names and paths the generated code uses.
struct ServiceModel<'a> {
    service: &'a Service,
    /// `package.Service`.
    full_name: String,
    /// `route_guide`, the stem of the module names.
    snake: String,
    methods: Vec<MethodModel<'a>>,
    plexus: &'a str,
}

struct MethodModel<'a> {
    method: &'a Method,
    /// `/package.Service/Method`.
    path: String,
    /// `GET_FEATURE`, the descriptor constant.
    constant: String,
    /// The client's method: the rpc's snake_case name, or `{name}_rpc` where that is taken
    /// by the client's own methods (`new`, `channel`, ...).
    client_name: String,
    /// The request and response types as seen from inside the generated modules.
    input: String,
    output: String,
}

impl<'a> ServiceModel<'a> {
    fn new(service: &'a Service, plexus: &'a str) -> ServiceModel<'a> {
        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        let methods = service
            .methods
            .iter()
            .map(|method| {
                let mut constant = raw(&method.name).to_ascii_uppercase();
                if constant == "SERVICE_NAME" {
                    constant.push_str("_METHOD");
                }
                let client_name = if CLIENT_OWN_METHODS.contains(&method.name.as_str()) {
                    format!("{}_rpc", method.name)
                } else {
                    method.name.clone()
                };
                MethodModel {
                    method,
                    client_name,
                    path: format!("/{full_name}/{}", method.proto_name),
                    constant,
                    input: from_child_module(&method.input_type),
                    output: from_child_module(&method.output_type),
                }
            })
            .collect();
        ServiceModel {
            service,
            snake: snake_case(raw(&service.name)),
            full_name,
            methods,
            plexus,
        }
    }

    fn name(&self) -> &str {
        &self.service.name
    }

    /// `pub mod foo_client { pub struct FooClient ... }`.
    fn client(&self, buf: &mut String) {
        let (name, full, p) = (self.name(), &self.full_name, self.plexus);
        let client = format!("{}Client", raw(name));
        let _ = write!(
            buf,
            r#"
/// The client for `{full}`.
pub mod {snake}_client {{
    #![allow(clippy::all, dead_code, missing_docs, unreachable_pub, unused_qualifications)]

    {docs}
    ///
    /// Cheap to clone, and `Send + Sync`: clones share the channel and the call defaults.
    #[derive(Debug, Clone)]
    pub struct {client} {{
        channel: {p}::Channel,
        defaults: ::std::sync::Arc<{p}::CallDefaults>,
    }}

    impl {client} {{
        /// A client that calls `{full}` on `channel`.
        pub fn new(channel: {p}::Channel) -> Self {{
            Self::with_defaults(channel, {p}::CallDefaults::new())
        }}

        /// A client whose calls take `defaults` (timeout, compression, size limits, metadata,
        /// wait-for-ready) for whatever their own `CallOptions` leave unset.
        pub fn with_defaults(
            channel: {p}::Channel,
            defaults: impl ::std::convert::Into<::std::sync::Arc<{p}::CallDefaults>>,
        ) -> Self {{
            {client} {{ channel, defaults: defaults.into() }}
        }}

        /// The channel this client calls on.
        pub fn channel(&self) -> &{p}::Channel {{
            &self.channel
        }}

        /// The defaults every call of this client starts from.
        pub fn defaults(&self) -> &{p}::CallDefaults {{
            &self.defaults
        }}

"#,
            snake = self.snake,
            docs = doc_comment(
                &self.service.comments,
                &format!("Calls the `{full}` service over a plexus channel.")
            ),
        );
        for m in &self.methods {
            self.client_method(m, buf);
        }
        buf.push_str("    }\n}\n");
    }

    fn client_method(&self, m: &MethodModel<'_>, buf: &mut String) {
        let p = self.plexus;
        let (input, output, path) = (&m.input, &m.output, &m.path);
        let docs = doc_comment(&m.method.comments, &format!("Calls `{path}`."));
        let name = &m.client_name;
        let (args, result, body) = match (m.method.client_streaming, m.method.server_streaming) {
            (false, false) => (
                format!("request: &{input}, "),
                format!("{p}::Response<{output}>"),
                format!("unary({path:?}, request, options)"),
            ),
            (false, true) => (
                format!("request: &{input}, "),
                format!("{p}::Streaming<{output}>"),
                format!("server_streaming({path:?}, request, options)"),
            ),
            (true, false) => (
                String::new(),
                format!("({p}::Sender<{input}>, {p}::ResponseFuture<{output}>)"),
                format!("client_streaming({path:?}, options)"),
            ),
            (true, true) => (
                String::new(),
                format!("({p}::Sender<{input}>, {p}::Streaming<{output}>)"),
                format!("bidi_streaming({path:?}, options)"),
            ),
        };
        let _ = write!(
            buf,
            r#"
        {docs}
        pub async fn {name}(
            &self,
            {args}options: {p}::CallOptions,
        ) -> ::std::result::Result<{result}, {p}::Status> {{
            {p}::Client::with_defaults(
                self.channel.clone(),
                {p}::ProstCodec::<{input}, {output}>::new(),
                ::std::sync::Arc::clone(&self.defaults),
            )
            .{body}
            .await
        }}
"#
        );
    }

    /// `pub mod foo_server { pub trait Foo ...; pub struct FooServer ... }`.
    fn server(&self, buf: &mut String) {
        let (name, full, p) = (self.name(), &self.full_name, self.plexus);
        let server = format!("{}Server", raw(name));
        let _ = write!(
            buf,
            r#"
/// The server side of `{full}`: the trait to implement and the service to register.
pub mod {snake}_server {{
    #![allow(clippy::all, dead_code, missing_docs, unreachable_pub, unused_qualifications, unused_variables)]

    /// The service's full name.
    pub const SERVICE_NAME: &str = {full:?};
"#,
            snake = self.snake,
        );
        for m in &self.methods {
            let kind = match (m.method.client_streaming, m.method.server_streaming) {
                (false, false) => "Unary",
                (false, true) => "ServerStreaming",
                (true, false) => "ClientStreaming",
                (true, true) => "BidiStreaming",
            };
            let _ = write!(
                buf,
                r#"
    /// `{path}`, a {kind_text} method.
    pub const {constant}: {p}::MethodDescriptor =
        {p}::MethodDescriptor::new({path:?}, {p}::MethodKind::{kind});
"#,
                path = m.path,
                constant = m.constant,
                kind_text = kind_text(kind),
            );
        }

        // The trait.
        let _ = write!(
            buf,
            "\n    {docs}\n    pub trait {name}: Send + Sync + 'static {{\n",
            docs = doc_comment(
                &self.service.comments,
                &format!(
                    "What a `{full}` server does: implement it (with `async fn`s) and register it \
                     with `{server}::new`."
                )
            ),
        );
        for m in &self.methods {
            let _ = write!(
                buf,
                "\n        {docs}\n        fn {sig};\n",
                docs = doc_comment(&m.method.comments, &format!("Handles `{}`.", m.path)),
                sig = self.handler_signature(m),
            );
        }
        buf.push_str("    }\n");

        // Arc<T> implements the trait too, so FooServer::new takes a T or an Arc<T>.
        let _ = write!(
            buf,
            "\n    impl<T: {name}> {name} for ::std::sync::Arc<T> {{\n"
        );
        for m in &self.methods {
            let args = if m.method.server_streaming {
                "request, sink"
            } else {
                "request"
            };
            let _ = write!(
                buf,
                "        fn {sig} {{\n            T::{method}(self, {args})\n        }}\n",
                sig = self.handler_signature(m),
                method = m.method.name,
            );
        }
        buf.push_str("    }\n");

        // The registrable service.
        let descriptors: Vec<&str> = self.methods.iter().map(|m| m.constant.as_str()).collect();
        let _ = write!(
            buf,
            r#"
    /// Registers an implementation of [`{name}`] on a server:
    /// `Server::builder().add_service({server}::new(service))`.
    #[derive(Debug)]
    pub struct {server}<T> {{
        inner: ::std::sync::Arc<T>,
    }}

    impl<T: {name}> {server}<T> {{
        /// Serves `service`: a `T`, or an `Arc<T>` (which implements the trait too).
        pub fn new(service: T) -> Self {{
            {server} {{ inner: ::std::sync::Arc::new(service) }}
        }}

        /// Serves a service that is already shared.
        pub fn from_arc(service: ::std::sync::Arc<T>) -> Self {{
            {server} {{ inner: service }}
        }}

        /// The service's implementation.
        pub fn get_ref(&self) -> &T {{
            &self.inner
        }}
    }}

    impl<T> ::std::clone::Clone for {server}<T> {{
        fn clone(&self) -> Self {{
            {server} {{ inner: ::std::sync::Arc::clone(&self.inner) }}
        }}
    }}

    impl<T: {name}> {p}::Service for {server}<T> {{
        const NAME: &'static str = SERVICE_NAME;
        const METHODS: &'static [{p}::MethodDescriptor] = &[{descriptors}];

        fn register(self, builder: {p}::ServerBuilder) -> {p}::ServerBuilder {{
"#,
            descriptors = descriptors.join(", "),
        );
        for m in &self.methods {
            self.route(m, buf);
        }
        buf.push_str("            builder\n        }\n    }\n}\n");
    }

    /// `fn name(&self, request: ...) -> impl Future<...> + Send`, without a body.
    fn handler_signature(&self, m: &MethodModel<'_>) -> String {
        let p = self.plexus;
        let (input, output, name) = (&m.input, &m.output, &m.method.name);
        let request = if m.method.client_streaming {
            format!("{p}::Request<{p}::RequestStream<{input}>>")
        } else {
            format!("{p}::Request<{input}>")
        };
        let (sink, result) = if m.method.server_streaming {
            (
                format!(", sink: {p}::ResponseSink<{output}>"),
                "()".to_string(),
            )
        } else {
            (String::new(), format!("{p}::Response<{output}>"))
        };
        format!(
            "{name}(&self, request: {request}{sink}) -> impl ::std::future::Future<\
             Output = ::std::result::Result<{result}, {p}::Status>> + Send"
        )
    }

    /// One `builder.unary(...)` (or another kind) for `m`, calling the trait through an Arc.
    fn route(&self, m: &MethodModel<'_>, buf: &mut String) {
        let p = self.plexus;
        let (register, params, args) = match (m.method.client_streaming, m.method.server_streaming)
        {
            (false, false) => ("unary", "request", "request"),
            (false, true) => ("server_streaming", "request, sink", "request, sink"),
            (true, false) => ("client_streaming", "request", "request"),
            (true, true) => ("bidi_streaming", "request, sink", "request, sink"),
        };
        let _ = write!(
            buf,
            r#"            let builder = {{
                let service = ::std::sync::Arc::clone(&self.inner);
                builder.{register}(
                    {constant}.path,
                    {p}::ProstCodec::<{output}, {input}>::new(),
                    move |{params}| {{
                        let service = ::std::sync::Arc::clone(&service);
                        async move {{ service.{name}({args}).await }}
                    }},
                )
            }};
"#,
            constant = m.constant,
            output = m.output,
            input = m.input,
            name = m.method.name,
        );
    }
}

fn kind_text(kind: &str) -> &'static str {
    match kind {
        "Unary" => "unary",
        "ServerStreaming" => "server-streaming",
        "ClientStreaming" => "client-streaming",
        _ => "bidirectional-streaming",
    }
}

/// The `.proto` comments as `///` lines, or `fallback` when there are none; ends without a
/// newline so it sits before an item.
fn doc_comment(comments: &Comments, fallback: &str) -> String {
    let only_docs = Comments {
        leading_detached: Vec::new(),
        leading: comments.leading.clone(),
        trailing: comments.trailing.clone(),
    };
    let mut out = String::new();
    only_docs.append_with_indent(0, &mut out);
    if out.trim().is_empty() {
        format!("/// {fallback}")
    } else {
        out.trim_end().to_string()
    }
}

/// A type path from prost-build (relative to the package's module) as seen from a module
/// inside it: `Point` → `super::Point`; absolute paths and `()` stay as they are.
fn from_child_module(path: &str) -> String {
    if path.starts_with("::") || path.starts_with("crate::") || path.starts_with('(') {
        path.to_string()
    } else {
        format!("super::{path}")
    }
}

/// An identifier without its `r#` prefix.
fn raw(ident: &str) -> &str {
    ident.strip_prefix("r#").unwrap_or(ident)
}

/// `RouteGuide` → `route_guide`, `HTTPProxy` → `http_proxy`.
fn snake_case(camel: &str) -> String {
    let chars: Vec<char> = camel.chars().collect();
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let after_lower = i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_numeric());
            let before_lower = i > 0
                && chars[i - 1].is_uppercase()
                && chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if (after_lower || before_lower) && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_snake_case() {
        for (camel, snake) in [
            ("RouteGuide", "route_guide"),
            ("Echo", "echo"),
            ("HTTPProxy", "http_proxy"),
            ("TestService", "test_service"),
            ("V2Api", "v2_api"),
            ("Self_", "self_"),
        ] {
            assert_eq!(snake_case(camel), snake, "{camel}");
        }
    }

    #[test]
    fn types_are_seen_from_the_child_module() {
        assert_eq!(from_child_module("Point"), "super::Point");
        assert_eq!(
            from_child_module("super::common::Id"),
            "super::super::common::Id"
        );
        assert_eq!(
            from_child_module("::plexus::prost_types::Timestamp"),
            "::plexus::prost_types::Timestamp"
        );
        assert_eq!(from_child_module("()"), "()");
    }
}
