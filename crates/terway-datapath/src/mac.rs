//! Ethernet MAC addresses (parse, print, random locally administered).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(Error::Invalid(format!(
                "MAC address {s:?} must have 6 octets"
            )));
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            *o = u8::from_str_radix(p, 16)
                .map_err(|_| Error::Invalid(format!("MAC address {s:?} is not hex")))?;
        }
        Ok(MacAddr(out))
    }
}

impl MacAddr {
    /// A random locally administered unicast MAC.
    pub fn random_local() -> Self {
        let mut b: [u8; 6] = rand::random();
        b[0] = (b[0] & 0xfe) | 0x02;
        MacAddr(b)
    }

    pub(crate) fn from_slice(v: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(v).ok().map(MacAddr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m: MacAddr = "02:AB:cd:00:11:ff".parse().unwrap();
        assert_eq!(m.to_string(), "02:ab:cd:00:11:ff");
        assert!("02:ab".parse::<MacAddr>().is_err());
        assert!("zz:ab:cd:00:11:ff".parse::<MacAddr>().is_err());
        let r = MacAddr::random_local();
        assert_eq!(r.0[0] & 0x03, 0x02);
    }
}
