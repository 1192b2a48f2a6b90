//! The protocol between the control plane and data planes (`omnisql/dataplane.proto`), generated at
//! build time with the vendored protoc.

#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("omnisql.dataplane.v1");
}
