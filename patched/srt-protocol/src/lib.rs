// PRISM PATCH: upstream's code as published, built by a newer compiler; its
// warnings are upstream's to fix, and would bury Prism's own.
#![allow(warnings)]

pub mod access;
pub mod connection;
pub mod listener;
pub mod options;
pub mod packet;
pub mod protocol;
pub mod settings;
pub mod statistics;
