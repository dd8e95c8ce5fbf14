//! A service as one value: what `plexus-build` generates for each `service` in a `.proto`
//! file, registered with [`ServerBuilder::add_service`].

use super::ServerBuilder;
use crate::method::MethodDescriptor;

/// A set of methods that registers its handlers on a server.
///
/// `plexus-build` implements it for every generated `FooServer`; implement it by hand to
/// bundle hand-written routes the same way.
pub trait Service {
    /// The service's full name, `package.Service`.
    const NAME: &'static str;

    /// Every method of the service, in `.proto` order.
    const METHODS: &'static [MethodDescriptor];

    /// Adds a route for each of [`Service::METHODS`] to `builder`.
    fn register(self, builder: ServerBuilder) -> ServerBuilder;
}
