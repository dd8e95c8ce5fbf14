//! The `ServerReflectionInfo` stream: one loop answers v1 requests, and v1alpha, whose
//! messages are the same on the wire, is translated to and from it.

use std::collections::HashSet;
use std::sync::Arc;

use plexus::prost::Message;
use plexus::{Code, Request, RequestStream, ResponseSink, Status};

use crate::pool::Pool;
use crate::v1::server_reflection_request::MessageRequest;
use crate::v1::server_reflection_response::MessageResponse;
use crate::v1::{
    ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse, ListServiceResponse,
    ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
};
use crate::{v1, v1alpha};

/// What both versions answer from.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    /// The names `list_services` gives, sorted.
    pub(crate) services: Vec<String>,
}

/// The answer to `request`, the files already sent on this stream in `sent`. A request that
/// asks nothing ends the stream with INVALID_ARGUMENT, as grpc-go's server does; a name that
/// is not known is an `error_response` and the stream goes on.
fn answer(
    shared: &Shared,
    request: ServerReflectionRequest,
    sent: &mut HashSet<usize>,
) -> Result<ServerReflectionResponse, Status> {
    let not_found = |message: String| {
        MessageResponse::ErrorResponse(ErrorResponse {
            error_code: Code::NotFound.as_i32(),
            error_message: message,
        })
    };
    let files = |index: usize, sent: &mut HashSet<usize>| {
        MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
            file_descriptor_proto: shared.pool.with_imports(index, sent),
        })
    };
    let response = match &request.message_request {
        Some(MessageRequest::FileByFilename(name)) => match shared.pool.file_by_name(name) {
            Some(index) => files(index, sent),
            None => not_found(format!("file {name:?} not found")),
        },
        Some(MessageRequest::FileContainingSymbol(symbol)) => {
            match shared.pool.file_containing_symbol(symbol) {
                Some(index) => files(index, sent),
                None => not_found(format!("symbol {symbol:?} not found")),
            }
        }
        Some(MessageRequest::FileContainingExtension(extension)) => {
            let (extendee, number) = (&extension.containing_type, extension.extension_number);
            match shared.pool.file_containing_extension(extendee, number) {
                Some(index) => files(index, sent),
                None => not_found(format!("extension {number} of {extendee:?} not found")),
            }
        }
        Some(MessageRequest::AllExtensionNumbersOfType(name)) => {
            match shared.pool.extension_numbers(name) {
                Some(numbers) => {
                    MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                        base_type_name: name.clone(),
                        extension_number: numbers,
                    })
                }
                None => not_found(format!("type {name:?} not found")),
            }
        }
        Some(MessageRequest::ListServices(_)) => {
            MessageResponse::ListServicesResponse(ListServiceResponse {
                service: shared
                    .services
                    .iter()
                    .map(|name| ServiceResponse { name: name.clone() })
                    .collect(),
            })
        }
        None => {
            return Err(Status::invalid_argument(
                "the reflection request sets none of its message_request fields",
            ));
        }
    };
    Ok(ServerReflectionResponse {
        valid_host: request.host.clone(),
        original_request: Some(request),
        message_response: Some(response),
    })
}

/// Answers `requests` in order until the client closes its side.
async fn serve<Req, Resp>(
    shared: &Shared,
    request: Request<RequestStream<Req>>,
    sink: ResponseSink<Resp>,
    into_v1: impl Fn(Req) -> Result<ServerReflectionRequest, Status>,
    from_v1: impl Fn(ServerReflectionResponse) -> Result<Resp, Status>,
) -> Result<(), Status> {
    let mut requests = request.into_message();
    let mut sent = HashSet::new();
    while let Some(message) = requests.message().await? {
        let response = answer(shared, into_v1(message)?, &mut sent)?;
        sink.send(from_v1(response)?).await?;
    }
    Ok(())
}

/// `message` decoded as `T`: the two versions' messages have the same fields and numbers.
fn translate<T: Message + Default>(message: &impl Message) -> Result<T, Status> {
    T::decode(message.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("reflection v1alpha translation: {e}")))
}

/// The `grpc.reflection.v1.ServerReflection` service; register it with
/// `add_service(reflection.v1())`.
#[derive(Debug, Clone)]
pub struct ReflectionV1 {
    pub(crate) shared: Arc<Shared>,
}

impl v1::server_reflection_server::ServerReflection for ReflectionV1 {
    async fn server_reflection_info(
        &self,
        request: Request<RequestStream<ServerReflectionRequest>>,
        sink: ResponseSink<ServerReflectionResponse>,
    ) -> Result<(), Status> {
        serve(&self.shared, request, sink, Ok, Ok).await
    }
}

/// The `grpc.reflection.v1alpha.ServerReflection` service; register it with
/// `add_service(reflection.v1alpha())`.
#[derive(Debug, Clone)]
pub struct ReflectionV1Alpha {
    pub(crate) shared: Arc<Shared>,
}

impl v1alpha::server_reflection_server::ServerReflection for ReflectionV1Alpha {
    async fn server_reflection_info(
        &self,
        request: Request<RequestStream<v1alpha::ServerReflectionRequest>>,
        sink: ResponseSink<v1alpha::ServerReflectionResponse>,
    ) -> Result<(), Status> {
        serve(
            &self.shared,
            request,
            sink,
            |request| translate(&request),
            |response| translate(&response),
        )
        .await
    }
}
