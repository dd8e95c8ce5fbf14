//! gRPC server reflection for plexus servers: `grpc.reflection.v1` (grpcurl and current
//! clients) and `grpc.reflection.v1alpha` (Postman, grpcio-reflection's descriptor database),
//! answered from the file descriptor sets `plexus-build` writes or from files registered by
//! hand.
//!
//! In build.rs, ask plexus-build for a descriptor set beside the code:
//!
//! ```ignore
//! plexus_build::configure()
//!     .file_descriptor_set_name("routeguide")
//!     .compile_protos(&["proto/route_guide.proto"], &["proto"])?;
//! ```
//!
//! and serve reflection next to your services:
//!
//! ```ignore
//! let reflection = plexus_reflection::Builder::new()
//!     .register_encoded_file_descriptor_set(plexus::include_file_descriptor_set!("routeguide"))
//!     .build()?;
//! let server = plexus::Server::builder()
//!     .add_service(RouteGuideServer::new(guide))
//!     .add_service(reflection.v1())
//!     .add_service(reflection.v1alpha())
//!     .build()?;
//! ```
//!
//! A runnable version, with a file registered by hand:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use plexus_reflection::Builder;
//!
//! let reflection = Builder::new()
//!     .register_file_descriptor(plexus::prost_types::FileDescriptorProto {
//!         name: Some("hello.proto".into()),
//!         package: Some("hello".into()),
//!         service: vec![plexus::prost_types::ServiceDescriptorProto {
//!             name: Some("Greeter".into()),
//!             ..Default::default()
//!         }],
//!         ..Default::default()
//!     })
//!     .build()?;
//! assert_eq!(
//!     reflection.services(),
//!     [
//!         "grpc.reflection.v1.ServerReflection",
//!         "grpc.reflection.v1alpha.ServerReflection",
//!         "hello.Greeter",
//!     ]
//! );
//! let _server = plexus::Server::builder()
//!     .add_service(reflection.v1())
//!     .add_service(reflection.v1alpha())
//!     .build()?;
//! # Ok(())
//! # }
//! ```
//!
//! The answers follow grpc-go's reflection server: `list_services` gives the exposed
//! services sorted by name, the reflection services included; `file_containing_symbol`
//! resolves fully-qualified services, methods, messages (nested too), fields, oneofs, enums,
//! enum values (scoped beside their enum, as protobuf scopes them) and extensions; file
//! answers carry the file asked for first, then its transitive imports not yet sent on the
//! stream, so a client can build its descriptor pool; a name that is not known is an
//! `error_response` with NOT_FOUND, and the stream stays open. Every response echoes the
//! request as `original_request` and its `host` as `valid_host`.

use std::fmt;
use std::sync::Arc;

use plexus::prost_types::{FileDescriptorProto, FileDescriptorSet};

mod pool;
mod service;

pub use service::{ReflectionV1, ReflectionV1Alpha};

use pool::{Candidate, Pool};
use service::Shared;

/// The `grpc.reflection.v1` protocol: messages, client and server.
// Generated from this crate's proto/grpc/reflection/v1/reflection.proto.
#[allow(missing_docs, unreachable_pub)]
pub mod v1 {
    plexus::include_proto!("grpc.reflection.v1");
}

/// The `grpc.reflection.v1alpha` protocol: the same messages as [`v1`] under the older name.
#[allow(missing_docs, unreachable_pub)]
pub mod v1alpha {
    plexus::include_proto!("grpc.reflection.v1alpha");
}

/// The encoded descriptor set of `grpc/reflection/v1/reflection.proto` and
/// `grpc/reflection/v1alpha/reflection.proto`.
pub const REFLECTION_DESCRIPTOR_SET: &[u8] = plexus::include_file_descriptor_set!("reflection");

/// The encoded descriptors of google/protobuf/*.proto, used for imports of them that are not
/// registered.
const WELL_KNOWN_TYPES: &[u8] = plexus::include_file_descriptor_set!("well_known_types");

/// The two reflection service names, v1 first.
const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Why a reflection service could not be built: a descriptor set that does not decode, two
/// different files under one name, a symbol declared twice, an import that is not
/// registered, or a service name that is in no registered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reflection: {}", self.message)
    }
}

impl std::error::Error for Error {}

/// Collects the files and settings of a reflection service; [`Builder::build`] checks them.
#[derive(Debug)]
pub struct Builder {
    files: Vec<Candidate>,
    services: Option<Vec<String>>,
    include_reflection: bool,
    /// The first registration that failed, reported by `build`.
    error: Option<Error>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with no files, listing every service of the files registered and the
    /// reflection services.
    pub fn new() -> Builder {
        Builder {
            files: Vec::new(),
            services: None,
            include_reflection: true,
            error: None,
        }
    }

    /// Registers every file of an encoded `google.protobuf.FileDescriptorSet`, such as
    /// `plexus::include_file_descriptor_set!("name")`. Each file is sent as its bytes in the
    /// set, custom options included. A set that does not decode makes [`build`](Self::build)
    /// fail.
    pub fn register_encoded_file_descriptor_set(mut self, set: impl AsRef<[u8]>) -> Builder {
        match Candidate::from_encoded_set(set.as_ref()) {
            Ok(files) => self.files.extend(files),
            Err(error) => {
                self.error.get_or_insert(error);
            }
        }
        self
    }

    /// Registers every file of a decoded descriptor set.
    pub fn register_file_descriptor_set(mut self, set: FileDescriptorSet) -> Builder {
        self.files
            .extend(set.file.into_iter().map(Candidate::from_proto));
        self
    }

    /// Registers one file. Its imports must be registered too, except google/protobuf/*.proto,
    /// which this crate provides when they are missing.
    pub fn register_file_descriptor(mut self, file: FileDescriptorProto) -> Builder {
        self.files.push(Candidate::from_proto(file));
        self
    }

    /// Lists `name` (`package.Service`) in `list_services`. Once any name is given, only the
    /// names given are listed (and the reflection services, unless
    /// [`include_reflection_service`](Self::include_reflection_service) turns them off);
    /// every registered symbol still resolves either way.
    pub fn with_service_name(mut self, name: impl Into<String>) -> Builder {
        self.services.get_or_insert_with(Vec::new).push(name.into());
        self
    }

    /// Whether the reflection services describe themselves: listed, and their files
    /// resolvable (default true, as grpc-go's server does).
    pub fn include_reflection_service(mut self, include: bool) -> Builder {
        self.include_reflection = include;
        self
    }

    /// Indexes the files. Fails on a registration that did not decode, two different files
    /// under one name, a symbol declared in two files, an import that is not registered (other
    /// than a well-known type) or a [`with_service_name`](Self::with_service_name) that no
    /// registered file declares.
    pub fn build(self) -> Result<Reflection, Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let own = if self.include_reflection {
            Candidate::from_encoded_set(REFLECTION_DESCRIPTOR_SET)?
        } else {
            Vec::new()
        };
        let registered_reflection = |name: &str| REFLECTION_SERVICES.contains(&name);
        let mut files = self.files;
        files.extend(own);
        let fallback = Candidate::from_encoded_set(WELL_KNOWN_TYPES)?;
        let pool = Pool::build(files, fallback)?;
        let mut services: Vec<String> = match self.services {
            Some(names) => {
                if let Some(missing) = names.iter().find(|name| !pool.has_service(name)) {
                    return Err(Error::new(format!(
                        "service {missing} is not declared in any registered file"
                    )));
                }
                names
            }
            None => pool
                .services()
                .filter(|name| !registered_reflection(name))
                .collect(),
        };
        if self.include_reflection {
            services.extend(REFLECTION_SERVICES.iter().map(|name| name.to_string()));
        }
        services.sort();
        services.dedup();
        Ok(Reflection {
            shared: Arc::new(Shared { pool, services }),
        })
    }
}

/// A built reflection index: hands out the v1 and v1alpha services, which share it.
#[derive(Debug, Clone)]
pub struct Reflection {
    shared: Arc<Shared>,
}

impl Reflection {
    /// A [`Builder`]; the same as `Builder::new()`.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The `grpc.reflection.v1.ServerReflection` service, for `ServerBuilder::add_service`.
    pub fn v1(&self) -> v1::server_reflection_server::ServerReflectionServer<ReflectionV1> {
        v1::server_reflection_server::ServerReflectionServer::new(ReflectionV1 {
            shared: Arc::clone(&self.shared),
        })
    }

    /// The `grpc.reflection.v1alpha.ServerReflection` service, for
    /// `ServerBuilder::add_service`.
    pub fn v1alpha(
        &self,
    ) -> v1alpha::server_reflection_server::ServerReflectionServer<ReflectionV1Alpha> {
        v1alpha::server_reflection_server::ServerReflectionServer::new(ReflectionV1Alpha {
            shared: Arc::clone(&self.shared),
        })
    }

    /// The names `list_services` answers with, sorted.
    pub fn services(&self) -> &[String] {
        &self.shared.services
    }
}
