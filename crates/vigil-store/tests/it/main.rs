//! The store conformance suites: every test runs unchanged against each
//! implementation (SQLite and PostgreSQL; a local directory, S3 and Azure Blob;
//! for the prediction log, all five).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod artifacts;
mod metadata;
mod predictions;
