//! The standard instance types Stowage plans for (AWS inf1, g4dn and c5, us-east-1 on-demand
//! prices), as catalog TOML: the generated catalogs of the planner and of `stowage synth` start
//! from it. `memory_gib` is what holds models: host RAM less 1 GiB for the OS and runtime on inf1
//! and c5 (compiled Neuron models live in host memory too), and the usable memory of the T4 GPUs
//! on g4dn (15 GiB each).

/// Instance types with us-east-1 on-demand prices (USD per hour).
pub const INSTANCE_TYPES: &str = r#"[instance_types."inf1.xlarge"]
family = "inf1"
price_per_hour = 0.228
memory_gib = 7
compute = 4

[instance_types."inf1.2xlarge"]
family = "inf1"
price_per_hour = 0.362
memory_gib = 15
compute = 4

[instance_types."inf1.6xlarge"]
family = "inf1"
price_per_hour = 1.180
memory_gib = 47
compute = 16

[instance_types."g4dn.xlarge"]
family = "g4dn"
price_per_hour = 0.526
memory_gib = 15
compute = 1

[instance_types."g4dn.12xlarge"]
family = "g4dn"
price_per_hour = 3.912
memory_gib = 60
compute = 4

[instance_types."c5.xlarge"]
family = "c5"
price_per_hour = 0.170
memory_gib = 7
compute = 4

[instance_types."c5.2xlarge"]
family = "c5"
price_per_hour = 0.340
memory_gib = 15
compute = 8

[instance_types."c5.4xlarge"]
family = "c5"
price_per_hour = 0.680
memory_gib = 31
compute = 16
"#;
