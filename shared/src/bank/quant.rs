//! 8-bit storage of pattern factors: symmetric int8 with one f32 scale per row.
//!
//! A bank holds up to 100K patterns; at f32 a rank-2 q/v adapter of `tiny` is 32 KiB, at int8 a
//! quarter of that plus a few scales. Per-row scales keep the error of each row proportional to
//! that row's own magnitude (rows of A and B differ by orders of magnitude after truncation), and
//! the rounding error is at most half a step: `|x − x̂| ≤ scale / 2` with `scale = max|row| / 127`.

use super::error::{Error, Result};
use super::matrix::Matrix;

/// A row-major int8 matrix with a scale per row: `x ≈ q · scale[row]`.
#[derive(Debug, Clone, PartialEq)]
pub struct QMatrix {
    rows: usize,
    cols: usize,
    values: Vec<i8>,
    scales: Vec<f32>,
}

impl QMatrix {
    pub fn quantize(m: &Matrix) -> Self {
        let (rows, cols) = (m.rows(), m.cols());
        let mut values = Vec::with_capacity(rows * cols);
        let mut scales = Vec::with_capacity(rows);
        for r in 0..rows {
            let row = m.row(r);
            let max = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let scale = max / 127.0;
            scales.push(scale);
            if scale == 0.0 {
                values.extend(std::iter::repeat_n(0i8, cols));
            } else {
                let inv = 1.0 / scale;
                values.extend(
                    row.iter()
                        .map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8),
                );
            }
        }
        Self {
            rows,
            cols,
            values,
            scales,
        }
    }

    /// Rebuilds from stored parts (a loaded bank file); sizes and scales are checked.
    pub fn from_parts(rows: usize, cols: usize, values: Vec<i8>, scales: Vec<f32>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(Error::MatrixSize {
                what: "int8 values",
                rows,
                cols,
                got: values.len(),
            });
        }
        if scales.len() != rows {
            return Err(Error::Dimension {
                what: "row scales",
                expected: rows,
                got: scales.len(),
            });
        }
        if scales.iter().any(|s| !s.is_finite() || *s < 0.0) {
            return Err(Error::NonFinite { what: "row scales" });
        }
        Ok(Self {
            rows,
            cols,
            values,
            scales,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn values(&self) -> &[i8] {
        &self.values
    }

    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Bytes held: one per value, four per scale.
    pub fn bytes(&self) -> usize {
        self.values.len() + 4 * self.scales.len()
    }

    /// Row `r` dequantized into `out` (length `cols`), each value multiplied by `w`.
    pub fn row_scaled_into(&self, r: usize, w: f32, out: &mut [f32]) {
        let s = self.scales[r] * w;
        let src = &self.values[r * self.cols..(r + 1) * self.cols];
        for (o, q) in out.iter_mut().zip(src) {
            *o = *q as f32 * s;
        }
    }

    pub fn dequantize(&self) -> Matrix {
        let mut data = vec![0.0f32; self.rows * self.cols];
        for r in 0..self.rows {
            self.row_scaled_into(r, 1.0, &mut data[r * self.cols..(r + 1) * self.cols]);
        }
        // Finite by construction (finite scales × small integers).
        Matrix::new(self.rows, self.cols, data, "dequantized")
            .unwrap_or_else(|_| Matrix::zeros(self.rows, self.cols))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_within_half_step_per_row() {
        let data: Vec<f32> = (0..24)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * if i < 12 { 1e-3 } else { 10.0 })
            .collect();
        let m = Matrix::new(2, 12, data, "m").unwrap();
        let q = QMatrix::quantize(&m);
        let d = q.dequantize();
        for r in 0..2 {
            let step = q.scales()[r];
            assert!(step > 0.0);
            for c in 0..12 {
                assert!((m.get(r, c) - d.get(r, c)).abs() <= step / 2.0 + 1e-9);
            }
        }
        assert_eq!(q.bytes(), 24 + 8);
    }

    #[test]
    fn zero_rows_stay_zero() {
        let q = QMatrix::quantize(&Matrix::zeros(3, 4));
        assert!(q.dequantize().data().iter().all(|v| *v == 0.0));
    }

    #[test]
    fn from_parts_checks() {
        assert!(QMatrix::from_parts(2, 2, vec![0; 3], vec![1.0; 2]).is_err());
        assert!(QMatrix::from_parts(2, 2, vec![0; 4], vec![1.0]).is_err());
        assert!(QMatrix::from_parts(1, 1, vec![0], vec![f32::NAN]).is_err());
        assert!(QMatrix::from_parts(1, 1, vec![0], vec![-1.0]).is_err());
        assert!(QMatrix::from_parts(1, 1, vec![3], vec![0.5]).is_ok());
    }
}
