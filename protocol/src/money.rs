//! Money as an exact integer.
//!
//! [`Money`] counts ten-thousandths of the currency unit (four decimals), so every price the
//! validation accepts (at most four decimals, see [`crate::validate`]) is held exactly and
//! sums never drift. Floating point exists only at the JSON boundary.

use core::fmt;
use core::ops::{Add, AddAssign, Neg, Sub};

use serde::{Deserialize, Serialize};

/// Ten-thousandths per currency unit.
pub const MONEY_SCALE: i64 = 10_000;

/// An amount of money in ten-thousandths of the currency unit.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Money(i64);

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(0);

    /// From a count of ten-thousandths.
    pub const fn from_e4(value_e4: i64) -> Money {
        Money(value_e4)
    }

    /// From whole cents.
    pub const fn from_cents(cents: i64) -> Money {
        Money(cents.saturating_mul(100))
    }

    /// The amount in ten-thousandths.
    pub const fn e4(self) -> i64 {
        self.0
    }

    /// The amount rounded half away from zero to whole cents.
    pub const fn cents_rounded(self) -> i64 {
        let q = self.0 / 100;
        let r = self.0 % 100;
        if r >= 50 {
            q + 1
        } else if r <= -50 {
            q - 1
        } else {
            q
        }
    }

    /// Converts a decimal number from JSON, which must be finite, within `abs_max` units and
    /// have at most four decimals. Returns `None` otherwise.
    pub fn from_f64_exact(value: f64, abs_max_e4: i64) -> Option<Money> {
        if !value.is_finite() {
            return None;
        }
        let scaled = value * MONEY_SCALE as f64;
        // `value` is finite, so `scaled` is finite or infinite, never NaN.
        if scaled.abs() > abs_max_e4 as f64 {
            return None;
        }
        let rounded = round_half_away(scaled);
        // A decimal with at most four digits after the point scales to an integer up to the
        // representation error of binary floating point, which is far below 1e-6 at these
        // magnitudes (|scaled| <= 1e15 keeps 2^-3 precision or better).
        let tolerance = 1e-6_f64.max(scaled.abs() * 1e-12);
        if (scaled - rounded).abs() > tolerance {
            return None;
        }
        Some(Money(rounded as i64))
    }

    /// The amount as a float for JSON output; always finite.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / MONEY_SCALE as f64
    }

    /// `self * quantity`, saturating.
    pub const fn times(self, quantity: i64) -> Money {
        Money(self.0.saturating_mul(quantity))
    }

    /// The absolute amount.
    pub const fn abs(self) -> Money {
        Money(self.0.saturating_abs())
    }
}

fn round_half_away(x: f64) -> f64 {
    // `f64::round` is not in core; this is the same rounding for the finite, bounded values
    // that reach it.
    let t = x as i64 as f64;
    let frac = x - t;
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        self.0 = self.0.saturating_add(rhs.0);
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0.saturating_sub(rhs.0))
    }
}

impl Neg for Money {
    type Output = Money;
    fn neg(self) -> Money {
        Money(self.0.saturating_neg())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MONEY_SCALE as u64;
        let frac = abs % MONEY_SCALE as u64;
        write!(f, "{sign}{whole}.{frac:04}")
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: i64 = 1_000_000_000 * MONEY_SCALE;

    fn check(value: f64, expected: Option<i64>) {
        assert_eq!(
            Money::from_f64_exact(value, MAX).map(Money::e4),
            expected,
            "{value}"
        );
    }

    #[test]
    fn decimals() {
        check(0.0, Some(0));
        check(1.5, Some(15_000));
        check(19.99, Some(199_900));
        check(0.1 + 0.2, Some(3_000));
        check(1.2345, Some(12_345));
        check(-2.5, Some(-25_000));
        check(1.23456, None);
        check(f64::NAN, None);
        check(f64::INFINITY, None);
        check(f64::MAX, None);
        check(1e10, None);
        check(999_999_999.999_9, Some(9_999_999_999_999));
    }

    #[test]
    fn display_and_cents() {
        assert_eq!(Money::from_e4(199_900).to_string(), "19.9900");
        assert_eq!(Money::from_e4(-5).to_string(), "-0.0005");
        assert_eq!(Money::from_e4(12_350).cents_rounded(), 124);
        assert_eq!(Money::from_e4(-12_350).cents_rounded(), -124);
        assert_eq!(Money::from_cents(250).e4(), 25_000);
    }
}
