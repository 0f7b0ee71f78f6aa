//! Errors of the netns fabric: which kernel step failed, for which ENI/node, and what the user can do.

/// A failure while turning emulator state into links, routes and filter rules.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    /// A command (`ip`, `nft`) could not be started at all.
    #[error("fabric: cannot run `{program}` ({context}): {source}; is iproute2/nftables installed and are we root?")]
    Spawn {
        /// Program name.
        program: String,
        /// What we were doing.
        context: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("fabric: `{command}` failed ({context}): {stderr}")]
    Command {
        /// The command line, for reproducing by hand.
        command: String,
        /// What we were doing.
        context: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A netlink operation failed.
    #[error("fabric: {context}: {source}")]
    Kernel {
        /// What we were doing.
        context: String,
        /// The datapath error.
        #[source]
        source: terway_datapath::Error,
    },
    /// The emulator reported something the fabric does not know (an ENI or instance never attached).
    #[error("fabric: {0}")]
    Unknown(String),
    /// A request that cannot be satisfied as given (bad name, missing vSwitch, …).
    #[error("fabric: invalid request: {0}")]
    Invalid(String),
}

/// Result alias of the fabric.
pub type FabricResult<T> = Result<T, FabricError>;
