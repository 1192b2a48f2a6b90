//! The OmniSQL control plane.
//!
//! It holds configuration and the audit trail, never SaaS data: tenants, principals and API keys, the
//! connector catalog, connections with sealed credentials, policies, data planes, audit events. Data
//! flows one way: the admin REST API ([`api`]) validates a change and writes it to the [`store`], which
//! bumps the configuration revision; the data-plane gRPC service ([`grpc`]) streams each region's tenants
//! to its data planes from that revision on, and stores the audit events they ship, hash-chained per
//! tenant ([`audit`]). The admin [`dashboard`] at `/` is a browser client of the same API.

pub mod api;
pub mod audit;
pub mod dashboard;
pub mod grpc;
pub mod keys;
pub mod model;
pub mod server;
pub mod smoke;
pub mod store;
pub mod testing;
pub mod usage;

pub use omnisql_tls::ServerTls;
pub use server::{ControlPlane, Options};
