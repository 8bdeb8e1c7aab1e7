//! The proc connector: `wire` decodes bytes (pure), this module owns the socket.
pub mod wire;
