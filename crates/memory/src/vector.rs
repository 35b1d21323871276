//! Small vector helpers over unit-length embeddings.

/// Dot product; the cosine for unit vectors. 0 when the lengths differ (an empty
/// embedding matches nothing).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `v` scaled to unit length (unchanged when it is all zeros).
pub fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Normalised mean of some vectors of the same length (empty when there are none).
pub fn centroid<'a>(vs: impl IntoIterator<Item = &'a [f32]>) -> Vec<f32> {
    let mut sum: Vec<f32> = Vec::new();
    for v in vs {
        if sum.is_empty() {
            sum = vec![0.0; v.len()];
        }
        if v.len() == sum.len() {
            sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        }
    }
    normalized(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centroid_of_two_orthogonal_units_is_the_diagonal() {
        let c = centroid([&[1.0, 0.0][..], &[0.0, 1.0][..]]);
        assert!((c[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((dot(&c, &c) - 1.0).abs() < 1e-6);
        assert_eq!(dot(&[1.0], &[1.0, 0.0]), 0.0);
    }
}
