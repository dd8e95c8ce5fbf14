//! interop-server's reflection: the services it registers are listed and described, from the
//! descriptor set build.rs writes.

use std::time::Duration;

use plexus::prost::Message;
use plexus::prost_types::FileDescriptorProto;
use plexus::{CallOptions, Channel, Listener};
use plexus_interop::{reflection, server};
use plexus_reflection::v1::ServerReflectionRequest;
use plexus_reflection::v1::server_reflection_client::ServerReflectionClient;
use plexus_reflection::v1::server_reflection_request::MessageRequest;
use plexus_reflection::v1::server_reflection_response::MessageResponse;

#[test]
fn interop_services_are_listed_and_described() {
    smol::block_on(async {
        let server = reflection::add(server::builder())
            .expect("reflection index")
            .build()
            .expect("server builds");
        let listener = Listener::bind_tcp("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("tcp address");
        let serving = server.clone();
        smol::spawn(async move { serving.serve(listener).await }).detach();
        let channel = Channel::new(&format!("http://{addr}")).expect("channel");
        let client = ServerReflectionClient::new(channel);
        let (tx, mut rx) = client
            .server_reflection_info(CallOptions::default().timeout(Duration::from_secs(60)))
            .await
            .expect("stream opens");

        let ask = |request| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        tx.send(ask(MessageRequest::ListServices(String::new())))
            .await
            .expect("send");
        let listed = match rx
            .message()
            .await
            .expect("answer")
            .map(|r| r.message_response)
        {
            Some(Some(MessageResponse::ListServicesResponse(list))) => list.service,
            other => panic!("expected a list, got {other:?}"),
        };
        let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                "grpc.testing.BenchmarkService",
                "grpc.testing.TestService",
            ]
        );

        tx.send(ask(MessageRequest::FileContainingSymbol(
            "grpc.testing.TestService.UnaryCall".into(),
        )))
        .await
        .expect("send");
        let files = match rx
            .message()
            .await
            .expect("answer")
            .map(|r| r.message_response)
        {
            Some(Some(MessageResponse::FileDescriptorResponse(files))) => files,
            other => panic!("expected files, got {other:?}"),
        };
        let files: Vec<FileDescriptorProto> = files
            .file_descriptor_proto
            .iter()
            .map(|bytes| FileDescriptorProto::decode(bytes.as_ref()).expect("a file"))
            .collect();
        let service = files[0]
            .service
            .iter()
            .find(|s| s.name() == "TestService")
            .expect("TestService in the first file");
        let unary = service
            .method
            .iter()
            .find(|m| m.name() == "UnaryCall")
            .expect("UnaryCall");
        assert_eq!(unary.input_type(), ".grpc.testing.SimpleRequest");
        // Every type the method uses is in a file sent on the stream.
        assert!(files.iter().any(|f| {
            f.package() == "grpc.testing"
                && f.message_type.iter().any(|m| m.name() == "SimpleRequest")
        }));
        tx.close().await.expect("close");
        assert!(rx.message().await.expect("clean end").is_none());
        server.shutdown(Duration::from_secs(1)).await;
    });
}
