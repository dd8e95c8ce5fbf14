//! Interceptors: code that runs around every call of a channel
//! ([`ChannelBuilder::interceptor`](crate::ChannelBuilder::interceptor)) or a server
//! ([`ServerBuilder::interceptor`](crate::ServerBuilder::interceptor)).
//!
//! Before a call, interceptors run in the order they were added, each able to read and change
//! the call's metadata (and, on a client, its deadline) or to refuse the call with a status,
//! which ends it there: a client call is not sent, a server call never reaches its handler.
//! After the call, every interceptor's `after` sees its final status, in reverse order.
//! `before` is async (a token fetch may await); [`client_fn`] and [`server_fn`] make an
//! interceptor from a plain closure.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::metadata::Metadata;
use crate::status::Status;

/// What `before` returns: `Ok` to go on, or the status that ends the call.
pub type InterceptFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Status>> + Send + 'a>>;

/// A call about to be sent, as client interceptors see it.
#[derive(Debug)]
pub struct ClientCall {
    method: String,
    metadata: Metadata,
    deadline: Option<Instant>,
}

impl ClientCall {
    pub(crate) fn new(method: &str, metadata: Metadata, deadline: Option<Instant>) -> ClientCall {
        ClientCall {
            method: method.to_string(),
            metadata,
            deadline,
        }
    }

    pub(crate) fn into_parts(self) -> (Metadata, Option<Instant>) {
        (self.metadata, self.deadline)
    }

    /// The full method path, `/package.Service/Method`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The request metadata, to add or change entries (an auth token, a request id).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// The call's deadline, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sets the call's deadline (`None` removes it).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

/// A call arriving at a server, as server interceptors see it before its handler.
#[derive(Debug)]
pub struct ServerCall {
    method: String,
    metadata: Metadata,
    deadline: Option<Instant>,
}

impl ServerCall {
    pub(crate) fn new(method: &str, metadata: Metadata, deadline: Option<Instant>) -> ServerCall {
        ServerCall {
            method: method.to_string(),
            metadata,
            deadline,
        }
    }

    pub(crate) fn into_metadata(self) -> Metadata {
        self.metadata
    }

    /// The full method path, `/package.Service/Method`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The request metadata, to change what the handler will see.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// The client's deadline, if it set one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// Runs around every call of a channel.
pub trait ClientInterceptor: Send + Sync + 'static {
    /// Before the call is sent: may change its metadata and deadline, or fail it with a
    /// status (it is then not sent). The default does nothing.
    fn before<'a>(&'a self, call: &'a mut ClientCall) -> InterceptFuture<'a> {
        let _ = call;
        Box::pin(async { Ok(()) })
    }

    /// Once the call has ended (or was refused by an interceptor), with its status.
    fn after(&self, method: &str, status: &Status) {
        let _ = (method, status);
    }
}

/// Runs around every call a server receives.
pub trait ServerInterceptor: Send + Sync + 'static {
    /// Before the handler runs: may change the metadata it sees, or fail the call with a
    /// status (the handler then never runs). The default does nothing.
    fn before<'a>(&'a self, call: &'a mut ServerCall) -> InterceptFuture<'a> {
        let _ = call;
        Box::pin(async { Ok(()) })
    }

    /// Once the call has ended, with the status the client was sent (CANCELLED if the client
    /// went away first).
    fn after(&self, method: &str, status: &Status) {
        let _ = (method, status);
    }
}

/// A client interceptor from a closure that runs before each call.
pub fn client_fn<F>(before: F) -> impl ClientInterceptor
where
    F: Fn(&mut ClientCall) -> Result<(), Status> + Send + Sync + 'static,
{
    ClientFn(before)
}

struct ClientFn<F>(F);

impl<F> ClientInterceptor for ClientFn<F>
where
    F: Fn(&mut ClientCall) -> Result<(), Status> + Send + Sync + 'static,
{
    fn before<'a>(&'a self, call: &'a mut ClientCall) -> InterceptFuture<'a> {
        let result = (self.0)(call);
        Box::pin(async move { result })
    }
}

/// A server interceptor from a closure that runs before each handler.
pub fn server_fn<F>(before: F) -> impl ServerInterceptor
where
    F: Fn(&mut ServerCall) -> Result<(), Status> + Send + Sync + 'static,
{
    ServerFn(before)
}

struct ServerFn<F>(F);

impl<F> ServerInterceptor for ServerFn<F>
where
    F: Fn(&mut ServerCall) -> Result<(), Status> + Send + Sync + 'static,
{
    fn before<'a>(&'a self, call: &'a mut ServerCall) -> InterceptFuture<'a> {
        let result = (self.0)(call);
        Box::pin(async move { result })
    }
}

/// A channel's or server's interceptors, in order.
pub(crate) struct Chain<I: ?Sized> {
    list: Arc<[Arc<I>]>,
}

impl<I: ?Sized> Clone for Chain<I> {
    fn clone(&self) -> Self {
        Chain {
            list: self.list.clone(),
        }
    }
}

impl<I: ?Sized> Default for Chain<I> {
    fn default() -> Self {
        Chain {
            list: Arc::from(Vec::new()),
        }
    }
}

impl<I: ?Sized> fmt::Debug for Chain<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} interceptors", self.list.len())
    }
}

impl<I: ?Sized> Chain<I> {
    pub(crate) fn new(list: Vec<Arc<I>>) -> Chain<I> {
        Chain {
            list: Arc::from(list),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// What [`Chain`] needs of an interceptor type and the call it sees: one implementation per
/// side, so the chain's logic is written once.
pub(crate) trait Intercepts<C>: Send + Sync {
    fn before_call<'a>(&'a self, call: &'a mut C) -> InterceptFuture<'a>;
    fn after_call(&self, method: &str, status: &Status);
    fn method(call: &C) -> &str;
}

impl Intercepts<ClientCall> for dyn ClientInterceptor {
    fn before_call<'a>(&'a self, call: &'a mut ClientCall) -> InterceptFuture<'a> {
        self.before(call)
    }

    fn after_call(&self, method: &str, status: &Status) {
        self.after(method, status);
    }

    fn method(call: &ClientCall) -> &str {
        call.method()
    }
}

impl Intercepts<ServerCall> for dyn ServerInterceptor {
    fn before_call<'a>(&'a self, call: &'a mut ServerCall) -> InterceptFuture<'a> {
        self.before(call)
    }

    fn after_call(&self, method: &str, status: &Status) {
        self.after(method, status);
    }

    fn method(call: &ServerCall) -> &str {
        call.method()
    }
}

impl<I: ?Sized> Chain<I> {
    /// Runs every `before` in order; the first refusal ends the chain (and is what every
    /// `after` then sees).
    pub(crate) async fn before<C>(&self, call: &mut C) -> Result<(), Status>
    where
        I: Intercepts<C>,
    {
        for interceptor in self.list.iter() {
            if let Err(status) = interceptor.before_call(call).await {
                self.after::<C>(I::method(call), &status);
                return Err(status);
            }
        }
        Ok(())
    }

    /// Runs every `after`, last added first.
    pub(crate) fn after<C>(&self, method: &str, status: &Status)
    where
        I: Intercepts<C>,
    {
        for interceptor in self.list.iter().rev() {
            interceptor.after_call(method, status);
        }
    }
}

/// Tells a chain's `after`s how one call ended, once.
pub(crate) struct Observer<I: ?Sized> {
    chain: Chain<I>,
    method: Box<str>,
}

impl<I: ?Sized> Observer<I> {
    pub(crate) fn new(chain: &Chain<I>, method: &str) -> Option<Observer<I>> {
        (!chain.is_empty()).then(|| Observer {
            chain: chain.clone(),
            method: method.into(),
        })
    }
}

impl<I: ?Sized> Observer<I> {
    /// Tells every interceptor of the chain that the call ended with `status`.
    pub(crate) fn done<C>(self, status: &Status)
    where
        I: Intercepts<C>,
    {
        self.chain.after::<C>(&self.method, status);
    }
}
