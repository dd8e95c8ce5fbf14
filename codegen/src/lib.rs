//! Typed plexus clients and server traits from `.proto` files, for `build.rs`, with no
//! `protoc`: [protox](https://docs.rs/protox) parses the files (well-known types such as
//! `google/protobuf/timestamp.proto` are built in), prost-build writes the messages, and this
//! crate writes, for each `service Foo`:
//!
//! - `foo_client::FooClient`: `new(channel)`, `with_defaults(channel, CallDefaults)`, and one
//!   `async fn` per rpc over [`plexus::Client`](https://docs.rs/plexus);
//! - `foo_server::Foo`, the trait a server implements (with `async fn`s), `foo_server::FooServer`
//!   to register it (`Server::builder().add_service(FooServer::new(service))`), and one
//!   `MethodDescriptor` constant per rpc.
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     plexus_build::compile_protos(&["proto/route_guide.proto"], &["proto"])?;
//!     Ok(())
//! }
//! ```
//! and in the crate, `pub mod routeguide { plexus::include_proto!("routeguide"); }`.
//!
//! Generated code names only `::plexus` (messages derive through `::plexus::prost`, and
//! well-known types are `::plexus::prost_types`), so the crate needs `plexus` as its only
//! dependency and `plexus-build` as its only build dependency.

mod error;
mod generator;

use std::env;
use std::path::{Path, PathBuf};

pub use error::Error;
use generator::{Generator, Options};

/// Compiles `protos` (found under `includes`) into one Rust file per package in `OUT_DIR`,
/// with clients and servers: [`configure`] with its defaults.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), Error> {
    configure().compile_protos(protos, includes)
}

/// A [`Builder`] with the defaults: clients and servers, output in `OUT_DIR`, plexus at
/// `::plexus`, `cargo:rerun-if-changed` printed for every file read.
pub fn configure() -> Builder {
    Builder {
        prost: prost_build::Config::new(),
        client: true,
        server: true,
        out_dir: None,
        plexus: "::plexus".to_string(),
        prost_path: None,
        descriptor_set_path: None,
        descriptor_set_name: None,
        rerun_if_changed: true,
    }
}

/// Settings for one code generation run; made by [`configure`].
pub struct Builder {
    prost: prost_build::Config,
    client: bool,
    server: bool,
    out_dir: Option<PathBuf>,
    plexus: String,
    /// Set by the user; else `{plexus}::prost`.
    prost_path: Option<String>,
    descriptor_set_path: Option<PathBuf>,
    descriptor_set_name: Option<String>,
    rerun_if_changed: bool,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("client", &self.client)
            .field("server", &self.server)
            .field("out_dir", &self.out_dir)
            .field("plexus", &self.plexus)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Whether to generate `foo_client` modules (default true).
    pub fn build_client(mut self, enable: bool) -> Self {
        self.client = enable;
        self
    }

    /// Whether to generate `foo_server` modules (default true).
    pub fn build_server(mut self, enable: bool) -> Self {
        self.server = enable;
        self
    }

    /// Writes the generated files to `dir` instead of `OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Adds an attribute (`#[derive(serde::Serialize)]`, ...) to the messages and enums
    /// matching `path` (`.`, `.package`, `.package.Message`; see prost-build).
    pub fn type_attribute(mut self, path: impl AsRef<str>, attribute: impl AsRef<str>) -> Self {
        self.prost.type_attribute(path, attribute);
        self
    }

    /// Adds an attribute to the messages (not enums) matching `path`.
    pub fn message_attribute(mut self, path: impl AsRef<str>, attribute: impl AsRef<str>) -> Self {
        self.prost.message_attribute(path, attribute);
        self
    }

    /// Adds an attribute to the enums matching `path`.
    pub fn enum_attribute(mut self, path: impl AsRef<str>, attribute: impl AsRef<str>) -> Self {
        self.prost.enum_attribute(path, attribute);
        self
    }

    /// Adds an attribute to the fields matching `path` (`.package.Message.field`).
    pub fn field_attribute(mut self, path: impl AsRef<str>, attribute: impl AsRef<str>) -> Self {
        self.prost.field_attribute(path, attribute);
        self
    }

    /// Makes the `bytes` fields matching `paths` `bytes::Bytes` (zero-copy, cheap to clone)
    /// instead of `Vec<u8>`; `["."]` for all of them.
    pub fn bytes<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.prost.bytes(paths);
        self
    }

    /// Makes the map fields matching `paths` `BTreeMap` instead of `HashMap`.
    pub fn btree_map<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.prost.btree_map(paths);
        self
    }

    /// Boxes the message fields matching `path`.
    pub fn boxed(mut self, path: impl AsRef<str>) -> Self {
        self.prost.boxed(path);
        self
    }

    /// Uses existing Rust types for a protobuf package or type instead of generating them:
    /// `extern_path(".common", "::common_protos")`.
    pub fn extern_path(
        mut self,
        proto_path: impl Into<String>,
        rust_path: impl Into<String>,
    ) -> Self {
        self.prost.extern_path(proto_path, rust_path);
        self
    }

    /// Leaves the `.proto` comments out of the items matching `paths`.
    pub fn disable_comments<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.prost.disable_comments(paths);
        self
    }

    /// Writes the encoded `FileDescriptorSet` of the compiled files and their imports (with
    /// comments) to `path`, for server reflection.
    pub fn file_descriptor_set_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.descriptor_set_path = Some(path.into());
        self
    }

    /// Writes the descriptor set to `{name}.bin` in the output directory, for
    /// `plexus::include_file_descriptor_set!("{name}")` (which reads `OUT_DIR`, so leave
    /// [`out_dir`](Self::out_dir) unset to use it).
    pub fn file_descriptor_set_name(mut self, name: impl Into<String>) -> Self {
        self.descriptor_set_name = Some(name.into());
        self
    }

    /// The path generated code uses for plexus (default `::plexus`), for crates that
    /// rename or re-export it; messages then derive through `{path}::prost`.
    pub fn plexus_path(mut self, path: impl Into<String>) -> Self {
        self.plexus = path.into();
        self
    }

    /// The path generated messages derive `Message` through (default `{plexus}::prost`);
    /// `::prost` for a crate that depends on prost itself.
    pub fn prost_path(mut self, path: impl Into<String>) -> Self {
        self.prost_path = Some(path.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for every `.proto` file read (default true),
    /// so cargo reruns the build script when one changes.
    pub fn emit_rerun_if_changed(mut self, enable: bool) -> Self {
        self.rerun_if_changed = enable;
        self
    }

    /// Writes an include file `name` that includes every generated package in modules.
    pub fn include_file(mut self, name: impl AsRef<Path>) -> Self {
        self.prost.include_file(name.as_ref());
        self
    }

    /// The prost-build configuration underneath, for any knob not mirrored here.
    pub fn prost_config(&mut self) -> &mut prost_build::Config {
        &mut self.prost
    }

    /// Parses `protos` (paths as given, each under one of `includes`) with protox and
    /// writes the code. A syntax error, an unknown type or a missing import is an [`Error`]
    /// naming the file, line and column.
    pub fn compile_protos(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let mut compiler = protox::Compiler::new(includes).map_err(Error::proto)?;
        compiler.include_source_info(true).include_imports(true);
        for proto in protos {
            compiler.open_file(proto).map_err(Error::proto)?;
        }
        if self.rerun_if_changed {
            for file in compiler.files() {
                if let Some(path) = file.path() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            for include in includes {
                println!("cargo:rerun-if-changed={}", include.as_ref().display());
            }
        }
        self.compile_fds(compiler.file_descriptor_set())
    }

    /// Writes the code for an already parsed `FileDescriptorSet` (with source info for the
    /// doc comments).
    pub fn compile_fds(mut self, fds: prost_types::FileDescriptorSet) -> Result<(), Error> {
        let out_dir = match self.out_dir.take() {
            Some(dir) => dir,
            None => env::var_os("OUT_DIR").map(PathBuf::from).ok_or_else(|| {
                Error::other("OUT_DIR is not set: run from build.rs, or set out_dir(..)")
            })?,
        };
        let descriptor_bytes =
            if self.descriptor_set_path.is_some() || self.descriptor_set_name.is_some() {
                Some(prost::Message::encode_to_vec(&fds))
            } else {
                None
            };
        let plexus = self.plexus.clone();
        let prost_path = self
            .prost_path
            .clone()
            .unwrap_or_else(|| format!("{plexus}::prost"));
        self.prost
            .out_dir(&out_dir)
            .prost_path(prost_path)
            .prost_types_path(format!("{plexus}::prost_types"))
            .service_generator(Box::new(Generator {
                options: Options {
                    client: self.client,
                    server: self.server,
                    plexus,
                },
            }));
        self.prost.compile_fds(fds).map_err(Error::io)?;
        if let Some(bytes) = descriptor_bytes {
            let mut paths = Vec::new();
            if let Some(path) = &self.descriptor_set_path {
                paths.push(path.clone());
            }
            if let Some(name) = &self.descriptor_set_name {
                paths.push(out_dir.join(format!("{name}.bin")));
            }
            for path in paths {
                std::fs::write(&path, &bytes)
                    .map_err(|e| Error::other(format!("writing {}: {e}", path.display())))?;
            }
        }
        Ok(())
    }
}
