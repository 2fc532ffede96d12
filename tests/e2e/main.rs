#![allow(clippy::unwrap_used)]
//! End-to-end tests: the real `switchyard` binary, real configs, real HTTP.
//! One test binary, so it links once.

mod amplitude;
mod browser;
mod clients;
mod connectors;
mod contract;
mod durability;
mod faults;
mod filters;
mod governance;
mod hostile;
mod jetstream;
mod reload;
mod sdk_wire;
mod secrets;
mod startup;
mod statsig;
mod tls;
mod warehouse;
mod warehouse_latest;
mod webhook;
