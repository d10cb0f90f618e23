//! Integration tests of vigil-monitor, in one binary (one link).

mod drift;
mod notify;
mod quality;
