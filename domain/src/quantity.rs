//! Kubernetes resource quantities (`500m`, `1.5`, `128Mi`, `1e3`) read exactly, without floats.
//!
//! Grammar and suffixes follow `k8s.io/apimachinery/pkg/api/resource/quantity.go`: a signed decimal
//! number, then a binary suffix (`Ki` … `Ei`, powers of 1024), a decimal suffix (`n`, `u`, `m`, ``,
//! `k`, `M`, `G`, `T`, `P`, `E`) or a decimal exponent (`e3`, `E-2`). Like the API server, values
//! are rounded up when converted to a smaller unit cannot hold them exactly.

use crate::error::Unsupported;

/// A non-negative quantity as `mantissa × 10^exp10 × 1024^exp1024`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: u128,
    exp10: i32,
    exp1024: u32,
}

impl Quantity {
    /// Parses a quantity string.
    ///
    /// # Errors
    /// A message saying why `s` is not a non-negative Kubernetes quantity.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let body = s.strip_prefix('+').unwrap_or(s);
        if body.starts_with('-') {
            return Err(format!("{s:?} is negative"));
        }
        let num_end = body.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(body.len());
        let (num, suffix) = body.split_at(num_end);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(format!("{s:?} is not a number with an optional suffix"));
        }
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(format!("{s:?} has too many digits"));
        }
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| format!("{s:?} is not a number"))?
        };
        let mut q = Self { mantissa, exp10: -(frac.len() as i32), exp1024: 0 };
        match suffix {
            "" => {}
            "n" => q.exp10 -= 9,
            "u" => q.exp10 -= 6,
            "m" => q.exp10 -= 3,
            "k" => q.exp10 += 3,
            "M" => q.exp10 += 6,
            "G" => q.exp10 += 9,
            "T" => q.exp10 += 12,
            "P" => q.exp10 += 15,
            "E" => q.exp10 += 18,
            "Ki" => q.exp1024 = 1,
            "Mi" => q.exp1024 = 2,
            "Gi" => q.exp1024 = 3,
            "Ti" => q.exp1024 = 4,
            "Pi" => q.exp1024 = 5,
            "Ei" => q.exp1024 = 6,
            e if e.starts_with(['e', 'E']) => {
                let exp: i32 = e[1..].parse().map_err(|_| format!("{s:?} has a bad exponent"))?;
                if exp.abs() > 40 {
                    return Err(format!("{s:?} has an exponent out of range"));
                }
                q.exp10 += exp;
            }
            other => return Err(format!("{s:?} has an unknown suffix {other:?}")),
        }
        Ok(q)
    }

    /// Whether the quantity is zero (`"0"`, `"0m"`, `"0Ki"`).
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// The value in units of `10^unit_exp10`, rounded up: `to_units(-3)` gives milli-units
    /// (millicores for CPU), `to_units(0)` whole units (bytes for memory).
    ///
    /// Returns `None` if the result does not fit in a `u64`.
    pub fn to_units(self, unit_exp10: i32) -> Option<u64> {
        let mut m = self.mantissa;
        for _ in 0..self.exp1024 {
            m = m.checked_mul(1024)?;
        }
        let shift = self.exp10 - unit_exp10;
        let v = if shift >= 0 {
            m.checked_mul(10u128.checked_pow(shift as u32)?)?
        } else {
            let d = 10u128.checked_pow(shift.unsigned_abs()).unwrap_or(u128::MAX);
            m.div_ceil(d)
        };
        u64::try_from(v).ok()
    }
}

/// Reads a CPU quantity as millicores (`"1.5"` → 1500, `"250m"` → 250), rounded up.
///
/// # Errors
/// [`Unsupported`] naming `field` when the value is malformed or out of range.
pub fn cpu_millis(field: &str, q: &str) -> Result<u64, Unsupported> {
    Quantity::parse(q)
        .map_err(|e| Unsupported::new(field, e))?
        .to_units(-3)
        .ok_or_else(|| Unsupported::new(field, format!("{q:?} is out of range")))
}

/// Reads a memory or storage quantity as bytes (`"128Mi"` → 134217728), rounded up.
///
/// # Errors
/// [`Unsupported`] naming `field` when the value is malformed or out of range.
pub fn bytes(field: &str, q: &str) -> Result<u64, Unsupported> {
    Quantity::parse(q)
        .map_err(|e| Unsupported::new(field, e))?
        .to_units(0)
        .ok_or_else(|| Unsupported::new(field, format!("{q:?} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_become_millicores() {
        let cases = [
            ("1", 1000),
            ("0.1", 100),
            ("250m", 250),
            ("1.5", 1500),
            ("2k", 2_000_000),
            ("1e-3", 1),
            ("100u", 1),
            ("0", 0),
            ("+2", 2000),
            (".5", 500),
        ];
        for (q, want) in cases {
            assert_eq!(cpu_millis("cpu", q).unwrap(), want, "{q}");
        }
    }

    #[test]
    fn memory_quantities_become_bytes() {
        let cases = [
            ("128Mi", 134_217_728),
            ("1Gi", 1_073_741_824),
            ("1G", 1_000_000_000),
            ("1.5Ki", 1536),
            ("500", 500),
            ("1e3", 1000),
            ("129M", 129_000_000),
            ("0.5", 1),
        ];
        for (q, want) in cases {
            assert_eq!(bytes("memory", q).unwrap(), want, "{q}");
        }
    }

    #[test]
    fn malformed_quantities_name_the_field() {
        for q in ["", "abc", "1.2.3", "-1", "5Qi", "1e", "1e99", "99999999999999999999999999999999"]
        {
            let err = bytes("spec.containers[0].resources.limits.memory", q).unwrap_err();
            assert_eq!(err.field, "spec.containers[0].resources.limits.memory", "{q}");
        }
        assert!(bytes("m", "100Ei").is_err(), "does not fit u64");
    }
}
