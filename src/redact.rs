//! Masks card numbers in text we keep or forward (P9).
//!
//! Any run of 13 to 19 digits (spaces and dashes between digits allowed) that passes the Luhn
//! check is replaced by `[card-number-masked]`. Messages should never carry card data; this is
//! the guard for the day one does, before a copy lands in PostgreSQL or the dead-letter queue.

/// Returns `text` with every Luhn-valid 13–19 digit run masked.
pub fn mask_card_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            // Extend over digits and single separators between digits.
            let mut j = i;
            let mut digits = Vec::new();
            let mut end = i;
            while j < chars.len() {
                let c = chars[j];
                if c.is_ascii_digit() {
                    digits.push(c as u8 - b'0');
                    end = j + 1;
                    j += 1;
                } else if (c == ' ' || c == '-')
                    && j + 1 < chars.len()
                    && chars[j + 1].is_ascii_digit()
                    && !digits.is_empty()
                {
                    j += 1;
                } else {
                    break;
                }
            }
            if (13..=19).contains(&digits.len()) && luhn(&digits) {
                out.push_str("[card-number-masked]");
            } else {
                out.extend(&chars[i..end]);
            }
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_luhn_valid_card_numbers_with_or_without_separators() {
        assert_eq!(
            mask_card_numbers(r#"{"note":"card 4242424242424242"}"#),
            r#"{"note":"card [card-number-masked]"}"#
        );
        assert_eq!(
            mask_card_numbers("pan 4111-1111-1111-1111 end"),
            "pan [card-number-masked] end"
        );
        assert_eq!(
            mask_card_numbers("5555 5555 5555 4444"),
            "[card-number-masked]"
        );
    }

    #[test]
    fn leaves_amounts_ids_and_non_luhn_runs_alone() {
        let text = r#"{"unit_amount":1999,"order_id":"ORD-1234567890123","x":4242424242424241}"#;
        assert_eq!(mask_card_numbers(text), text);
    }
}
