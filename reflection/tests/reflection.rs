//! Reflection over the wire, v1 and v1alpha, on smol: a server with the reflection services
//! for tests/proto/shop (a proto2 extension, nested types, an import of a sibling file and
//! of well-known types, a custom option), asked through the generated clients.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::{Either, select};
use plexus::prost::Message;
use plexus::prost_types::{FileDescriptorProto, ServiceDescriptorProto};
use plexus::{CallOptions, Channel, Code, Listener, Sender, Server, Streaming};
use plexus_reflection::v1::server_reflection_request::MessageRequest;
use plexus_reflection::v1::server_reflection_response::MessageResponse;
use plexus_reflection::v1::{ExtensionRequest, ServerReflectionRequest, ServerReflectionResponse};
use plexus_reflection::{Builder, Reflection, v1, v1alpha};

/// The encoded descriptor set of the shop protos and their imports, as plexus-build writes
/// one (protox, imports and source info included).
fn shop_set() -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proto");
    let mut compiler = protox::Compiler::new([dir]).expect("include dir");
    compiler.include_imports(true).include_source_info(true);
    compiler
        .open_files(["shop/catalog.proto", "shop/extras.proto"])
        .expect("shop protos parse");
    compiler.encode_file_descriptor_set()
}

fn shop_reflection() -> Reflection {
    Builder::new()
        .register_encoded_file_descriptor_set(shop_set())
        .build()
        .expect("reflection builds")
}

/// Serves `reflection` (both versions) on a loopback port; returns the server and a channel.
fn start(reflection: &Reflection) -> (Server, Channel) {
    let server = Server::builder()
        .add_service(reflection.v1())
        .add_service(reflection.v1alpha())
        .build()
        .expect("server builds");
    let listener = Listener::bind_tcp("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("tcp address");
    let serving = server.clone();
    smol::spawn(async move { serving.serve(listener).await }).detach();
    let channel = Channel::new(&format!("http://{addr}")).expect("channel");
    (server, channel)
}

/// Fails the test instead of hanging when `fut` takes over a minute.
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let timer = async_io::Timer::after(Duration::from_secs(60));
    match select(std::pin::pin!(fut), std::pin::pin!(timer)).await {
        Either::Left((out, _)) => out,
        Either::Right(_) => panic!("{what} did not finish within 60 s"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Version {
    V1,
    V1Alpha,
}

const VERSIONS: [Version; 2] = [Version::V1, Version::V1Alpha];

/// One `ServerReflectionInfo` stream. Both versions are asked and answered in v1 types: a
/// v1alpha session sends real v1alpha messages on the v1alpha path, and converts them
/// through their encoding, which the two versions share.
enum Session {
    V1(
        Sender<ServerReflectionRequest>,
        Streaming<ServerReflectionResponse>,
    ),
    V1Alpha(
        Sender<v1alpha::ServerReflectionRequest>,
        Streaming<v1alpha::ServerReflectionResponse>,
    ),
}

fn convert<T: Message + Default>(message: &impl Message) -> T {
    T::decode(message.encode_to_vec().as_slice()).expect("same wire format")
}

impl Session {
    async fn open(channel: &Channel, version: Version) -> Session {
        match version {
            Version::V1 => {
                let client =
                    v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
                let (tx, rx) = client
                    .server_reflection_info(CallOptions::default())
                    .await
                    .expect("v1 stream opens");
                Session::V1(tx, rx)
            }
            Version::V1Alpha => {
                let client =
                    v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
                let (tx, rx) = client
                    .server_reflection_info(CallOptions::default())
                    .await
                    .expect("v1alpha stream opens");
                Session::V1Alpha(tx, rx)
            }
        }
    }

    /// Sends `request` and returns the next response.
    async fn ask(&mut self, request: MessageRequest) -> ServerReflectionResponse {
        let request = ServerReflectionRequest {
            host: "reflection.test".into(),
            message_request: Some(request),
        };
        let response = bounded("a reflection answer", async {
            match self {
                Session::V1(tx, rx) => {
                    tx.send(request.clone()).await.expect("send");
                    rx.message().await.expect("answer").expect("a response")
                }
                Session::V1Alpha(tx, rx) => {
                    tx.send(convert(&request)).await.expect("send");
                    let response = rx.message().await.expect("answer").expect("a response");
                    convert(&response)
                }
            }
        })
        .await;
        assert_eq!(response.valid_host, "reflection.test");
        assert_eq!(response.original_request.as_ref(), Some(&request));
        response
    }

    /// The files of a file answer, decoded, in the order sent.
    async fn files(&mut self, request: MessageRequest) -> Vec<FileDescriptorProto> {
        let what = format!("{request:?}");
        match self.ask(request).await.message_response {
            Some(MessageResponse::FileDescriptorResponse(files)) => files
                .file_descriptor_proto
                .iter()
                .map(|bytes| FileDescriptorProto::decode(bytes.as_ref()).expect("a file"))
                .collect(),
            other => panic!("{what}: expected files, got {other:?}"),
        }
    }

    /// The name of the first file of the answer: the one that was asked for.
    async fn file_of(&mut self, request: MessageRequest) -> String {
        self.files(request).await[0].name().to_string()
    }

    /// Asserts the answer is an error with NOT_FOUND.
    async fn expect_not_found(&mut self, request: MessageRequest) {
        let what = format!("{request:?}");
        match self.ask(request).await.message_response {
            Some(MessageResponse::ErrorResponse(error)) => {
                assert_eq!(error.error_code, Code::NotFound.as_i32(), "{what}");
                assert!(!error.error_message.is_empty(), "{what}");
            }
            other => panic!("{what}: expected NOT_FOUND, got {other:?}"),
        }
    }

    async fn list(&mut self) -> Vec<String> {
        match self
            .ask(MessageRequest::ListServices(String::new()))
            .await
            .message_response
        {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("expected a service list, got {other:?}"),
        }
    }

    async fn extension_numbers(&mut self, name: &str) -> Vec<i32> {
        let request = MessageRequest::AllExtensionNumbersOfType(name.into());
        match self.ask(request).await.message_response {
            Some(MessageResponse::AllExtensionNumbersResponse(numbers)) => {
                assert_eq!(numbers.base_type_name, name);
                numbers.extension_number
            }
            other => panic!("{name}: expected extension numbers, got {other:?}"),
        }
    }

    /// Closes the client's side and returns the stream's final status.
    async fn finish(self) -> plexus::Status {
        bounded("the end of the stream", async {
            let end = match self {
                Session::V1(tx, mut rx) => {
                    tx.close().await.expect("close");
                    rx.message()
                        .await
                        .map(|extra| extra.map(|r| format!("{r:?}")))
                }
                Session::V1Alpha(tx, mut rx) => {
                    tx.close().await.expect("close");
                    rx.message()
                        .await
                        .map(|extra| extra.map(|r| format!("{r:?}")))
                }
            };
            match end {
                Ok(None) => plexus::Status::ok(),
                Ok(Some(extra)) => panic!("unexpected response {extra}"),
                Err(status) => status,
            }
        })
        .await
    }
}

fn symbol(name: &str) -> MessageRequest {
    MessageRequest::FileContainingSymbol(name.into())
}

fn filename(name: &str) -> MessageRequest {
    MessageRequest::FileByFilename(name.into())
}

fn extension(containing_type: &str, number: i32) -> MessageRequest {
    MessageRequest::FileContainingExtension(ExtensionRequest {
        containing_type: containing_type.into(),
        extension_number: number,
    })
}

#[test]
fn list_services_names_the_registered_and_the_reflection_services() {
    smol::block_on(async {
        let reflection = shop_reflection();
        let (server, channel) = start(&reflection);
        let expected = [
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "shop.Catalog",
        ];
        assert_eq!(reflection.services(), expected);
        for version in VERSIONS {
            let mut session = Session::open(&channel, version).await;
            assert_eq!(session.list().await, expected, "{version:?}");
            assert!(session.finish().await.is_ok(), "{version:?}");
        }
        server.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn every_kind_of_symbol_resolves_to_its_file() {
    let cases = [
        ("shop.Catalog", "shop/catalog.proto"),
        ("shop.Catalog.GetItem", "shop/catalog.proto"),
        ("shop.Item", "shop/catalog.proto"),
        (".shop.Item", "shop/catalog.proto"),
        ("shop.Item.Variant", "shop/catalog.proto"),
        ("shop.Item.Variant.label", "shop/catalog.proto"),
        ("shop.Item.name", "shop/catalog.proto"),
        ("shop.Item.pick", "shop/catalog.proto"),
        ("shop.Item.Kind", "shop/catalog.proto"),
        // Enum values are scoped beside their enum, as protobuf scopes them.
        ("shop.Item.BOOK", "shop/catalog.proto"),
        ("shop.note", "shop/catalog.proto"),
        ("shop.common.Money", "shop/common.proto"),
        ("shop.common.Currency", "shop/common.proto"),
        ("shop.common.EUR", "shop/common.proto"),
        ("shop.extras.color", "shop/extras.proto"),
        ("shop.extras.Box", "shop/extras.proto"),
        ("shop.extras.Box.box_size", "shop/extras.proto"),
        (
            "google.protobuf.Timestamp",
            "google/protobuf/timestamp.proto",
        ),
        (
            "google.protobuf.MessageOptions",
            "google/protobuf/descriptor.proto",
        ),
        (
            "grpc.reflection.v1.ServerReflection.ServerReflectionInfo",
            "grpc/reflection/v1/reflection.proto",
        ),
        (
            "grpc.reflection.v1alpha.ServerReflectionRequest",
            "grpc/reflection/v1alpha/reflection.proto",
        ),
    ];
    smol::block_on(async {
        let (server, channel) = start(&shop_reflection());
        for version in VERSIONS {
            let mut session = Session::open(&channel, version).await;
            for (name, file) in cases {
                assert_eq!(
                    session.file_of(symbol(name)).await,
                    file,
                    "{version:?} {name}"
                );
            }
            for missing in ["shop", "shop.Missing", "shop.Item.Kind.BOOK", "Item", ""] {
                session.expect_not_found(symbol(missing)).await;
            }
            assert!(session.finish().await.is_ok());
        }
        server.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn files_come_with_their_imports_once_per_stream() {
    smol::block_on(async {
        let (server, channel) = start(&shop_reflection());
        for version in VERSIONS {
            let mut session = Session::open(&channel, version).await;
            let first = session.files(filename("shop/extras.proto")).await;
            let names: Vec<&str> = first.iter().map(|f| f.name()).collect();
            // The file asked for, then its imports breadth first, each once.
            assert_eq!(
                names,
                [
                    "shop/extras.proto",
                    "shop/catalog.proto",
                    "google/protobuf/descriptor.proto",
                    "google/protobuf/timestamp.proto",
                    "shop/common.proto",
                ],
                "{version:?}"
            );
            // Already sent: only the file asked for comes again.
            let again = session.files(symbol("shop.Item")).await;
            assert_eq!(again.len(), 1, "{version:?}");
            assert_eq!(again[0].name(), "shop/catalog.proto");
            let common = session.files(filename("shop/common.proto")).await;
            assert_eq!(common.len(), 1);
            assert!(session.finish().await.is_ok());

            // A new stream starts over.
            let mut fresh = Session::open(&channel, version).await;
            let item = fresh.files(symbol("shop.Item")).await;
            let names: HashSet<&str> = item.iter().map(|f| f.name()).collect();
            assert_eq!(item.len(), 4);
            assert_eq!(
                names,
                HashSet::from([
                    "shop/catalog.proto",
                    "google/protobuf/descriptor.proto",
                    "google/protobuf/timestamp.proto",
                    "shop/common.proto",
                ])
            );
            // The file is sent as registered: its custom option (an extension prost-types
            // does not model) is still in the bytes.
            let catalog = fresh.ask(filename("shop/catalog.proto")).await;
            let Some(MessageResponse::FileDescriptorResponse(files)) = catalog.message_response
            else {
                panic!("expected files");
            };
            let bytes = &files.file_descriptor_proto[0];
            assert!(
                bytes
                    .windows(b"kept-custom-option".len())
                    .any(|w| w == b"kept-custom-option")
            );
            assert!(fresh.finish().await.is_ok());
        }
        server.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn extensions_resolve_by_number_and_are_listed_per_type() {
    smol::block_on(async {
        let (server, channel) = start(&shop_reflection());
        for version in VERSIONS {
            let mut session = Session::open(&channel, version).await;
            assert_eq!(
                session.file_of(extension("shop.Item", 100)).await,
                "shop/extras.proto"
            );
            assert_eq!(
                session.file_of(extension(".shop.Item", 120)).await,
                "shop/extras.proto"
            );
            assert_eq!(
                session
                    .file_of(extension("google.protobuf.MessageOptions", 50001))
                    .await,
                "shop/catalog.proto"
            );
            session.expect_not_found(extension("shop.Item", 101)).await;
            session.expect_not_found(extension("shop.Nope", 100)).await;
            assert_eq!(session.extension_numbers("shop.Item").await, [100, 120]);
            assert_eq!(
                session
                    .extension_numbers("google.protobuf.MessageOptions")
                    .await,
                [50001]
            );
            assert!(
                session
                    .extension_numbers("shop.common.Money")
                    .await
                    .is_empty()
            );
            session
                .expect_not_found(MessageRequest::AllExtensionNumbersOfType(
                    "shop.Nope".into(),
                ))
                .await;
            assert!(session.finish().await.is_ok());
        }
        server.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn not_found_answers_keep_the_stream_open() {
    smol::block_on(async {
        let (server, channel) = start(&shop_reflection());
        for version in VERSIONS {
            let mut session = Session::open(&channel, version).await;
            session.expect_not_found(filename("no/such.proto")).await;
            session.expect_not_found(symbol("no.Such")).await;
            session.expect_not_found(extension("shop.Item", 199)).await;
            assert_eq!(session.list().await.len(), 3);
            assert_eq!(
                session.file_of(symbol("shop.Catalog")).await,
                "shop/catalog.proto"
            );
            assert!(session.finish().await.is_ok());
        }
        server.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn a_request_that_asks_nothing_ends_the_stream_with_invalid_argument() {
    smol::block_on(async {
        let (server, channel) = start(&shop_reflection());
        let client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
        let (tx, mut rx) = client
            .server_reflection_info(CallOptions::default())
            .await
            .expect("stream opens");
        tx.send(ServerReflectionRequest::default())
            .await
            .expect("send");
        let status = bounded("the status", rx.message())
            .await
            .expect_err("the stream fails");
        assert_eq!(status.code(), Code::InvalidArgument);
        server.shutdown(Duration::from_secs(1)).await;
    });
}

/// A file registered by hand that imports a well-known type without registering it.
fn hand_file() -> FileDescriptorProto {
    FileDescriptorProto {
        name: Some("hand/made.proto".into()),
        package: Some("hand".into()),
        dependency: vec!["google/protobuf/timestamp.proto".into()],
        service: vec![ServiceDescriptorProto {
            name: Some("Made".into()),
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

#[test]
fn hand_registered_files_get_well_known_imports_and_the_listing_can_be_narrowed() {
    let reflection = Builder::new()
        .register_encoded_file_descriptor_set(shop_set())
        .register_file_descriptor(hand_file())
        .with_service_name("hand.Made")
        .include_reflection_service(false)
        .build()
        .expect("builds");
    assert_eq!(reflection.services(), ["hand.Made"]);
    smol::block_on(async {
        let (server, channel) = start(&reflection);
        let mut session = Session::open(&channel, Version::V1).await;
        assert_eq!(session.list().await, ["hand.Made"]);
        // Not listed, still resolvable.
        assert_eq!(
            session.file_of(symbol("shop.Catalog")).await,
            "shop/catalog.proto"
        );
        // Without the reflection service's own files.
        session
            .expect_not_found(symbol("grpc.reflection.v1.ServerReflection"))
            .await;
        assert!(session.finish().await.is_ok());
        server.shutdown(Duration::from_secs(1)).await;
    });

    // Alone, the hand-made file's Timestamp import comes from the crate's well-known types.
    let alone = Builder::new()
        .register_file_descriptor(hand_file())
        .build()
        .expect("builds");
    smol::block_on(async {
        let (server, channel) = start(&alone);
        let mut session = Session::open(&channel, Version::V1).await;
        let files = session.files(symbol("hand.Made")).await;
        let names: Vec<&str> = files.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            ["hand/made.proto", "google/protobuf/timestamp.proto"]
        );
        assert_eq!(
            session.file_of(symbol("google.protobuf.Timestamp")).await,
            "google/protobuf/timestamp.proto"
        );
        assert!(session.finish().await.is_ok());
        server.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn bad_registrations_are_errors_that_say_what_is_wrong() {
    let error = |builder: Builder| builder.build().expect_err("build fails").to_string();

    let garbage = error(Builder::new().register_encoded_file_descriptor_set([0x0a, 0x05, 0x01]));
    assert!(garbage.contains("not valid protobuf"), "{garbage}");

    let unknown = error(Builder::new().with_service_name("no.Such"));
    assert!(unknown.contains("no.Such"), "{unknown}");

    let mut missing = hand_file();
    missing.dependency = vec!["not/there.proto".into()];
    let missing = error(Builder::new().register_file_descriptor(missing));
    assert!(
        missing.contains("hand/made.proto") && missing.contains("not/there.proto"),
        "{missing}"
    );

    let mut other = hand_file();
    other.package = Some("elsewhere".into());
    let twice = error(
        Builder::new()
            .register_file_descriptor(hand_file())
            .register_file_descriptor(other),
    );
    assert!(twice.contains("hand/made.proto"), "{twice}");

    let mut clash = hand_file();
    clash.name = Some("hand/clash.proto".into());
    let clash = error(
        Builder::new()
            .register_file_descriptor(hand_file())
            .register_file_descriptor(clash),
    );
    assert!(clash.contains("hand.Made"), "{clash}");

    // The same file twice (as two crates' sets both carry timestamp.proto) is fine.
    Builder::new()
        .register_encoded_file_descriptor_set(shop_set())
        .register_encoded_file_descriptor_set(shop_set())
        .build()
        .expect("identical files registered twice");
}
