//! Server reflection (`grpc.reflection.v1` and `v1alpha`) for the interop services, so
//! grpcurl, Postman or grpcio-reflection can discover interop-server without its .proto files.

use plexus::ServerBuilder;
use plexus_reflection::{Builder, Error, Reflection};

use crate::grpc::testing::{benchmark_service_server, test_service_server};

/// The reflection index of `interop/proto` (the descriptor set build.rs writes) and of
/// grpc.health.v1. It lists the services interop-server registers, Health and the reflection
/// services; UnimplementedService,
/// which the server deliberately leaves out, is described but not listed.
pub fn index() -> Result<Reflection, Error> {
    Builder::new()
        .register_encoded_file_descriptor_set(plexus::include_file_descriptor_set!("interop"))
        .register_encoded_file_descriptor_set(plexus_health::FILE_DESCRIPTOR_SET)
        .with_service_name(test_service_server::SERVICE_NAME)
        .with_service_name(benchmark_service_server::SERVICE_NAME)
        .with_service_name(plexus_health::v1::health_server::SERVICE_NAME)
        .build()
}

/// `builder` with both reflection services added.
pub fn add(builder: ServerBuilder) -> Result<ServerBuilder, Error> {
    let reflection = index()?;
    Ok(builder
        .add_service(reflection.v1())
        .add_service(reflection.v1alpha()))
}
