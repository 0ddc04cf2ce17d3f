pub use pulp_wire::Code;
