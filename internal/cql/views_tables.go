package cql

import (
	"fmt"
	"strings"
)

// The tables of generation 0, as migrations/scylla/0101_views.cql creates
// them. Generation n > 0 adds the suffix _g<n> to each name.
const (
	orderTableName    = "order_read_model"
	summaryTableName  = "orders_by_customer"
	customerTableName = "customers"
)

const (
	orderColumns    = `id, customer_id, status, items, tracking_number, carrier, cancelled_reason, version, created_at, updated_at`
	customerColumns = `id, email, first_name, last_name, phone, version, registered_at, updated_at`
	summaryColumns  = `order_id, status, item_count, quantity, version, created_at, updated_at`
)

// tables are the names of one generation's three tables.
type tables struct {
	orders, summaries, customers string
}

// tablesOf returns generation gen's table names: 0101's for generation 0,
// with the suffix _g<gen> otherwise.
func tablesOf(gen int64) tables {
	if gen == 0 {
		return tables{orderTableName, summaryTableName, customerTableName}
	}
	suffix := fmt.Sprintf("_g%d", gen)
	return tables{orderTableName + suffix, summaryTableName + suffix, customerTableName + suffix}
}

// all returns the three names.
func (t tables) all() []string { return []string{t.orders, t.summaries, t.customers} }

// statements are the CQL a Views runs, on the tables of its generation.
// They are built once per Views, so a request costs no string building.
type statements struct {
	selectOrder, writeOrder, insertOrderIf, updateOrderIf             string
	selectCustomer, writeCustomer, insertCustomerIf, updateCustomerIf string
	writeSummary, selectSummaries                                     string
}

// statementsOf returns the statements on generation t's tables.
//
// The row writes are plain writes whose write timestamp is the version
// they write (USING TIMESTAMP, see versionStamp); the reads of a row also
// return the write timestamp of its version cell, which tells a row written
// that way from one a release before issue 17 wrote with lightweight
// transactions (see conditionalRow). The conditional writes (the *If
// statements) remain for those rows only.
func statementsOf(t tables) statements {
	r := strings.NewReplacer("{orders}", t.orders, "{summaries}", t.summaries, "{customers}", t.customers)
	return statements{
		selectOrder: r.Replace(`SELECT ` + orderColumns + `, WRITETIME(version) FROM {orders} WHERE id = ?`),
		writeOrder: r.Replace(`INSERT INTO {orders} (` + orderColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		USING TIMESTAMP ?`),
		insertOrderIf: r.Replace(`INSERT INTO {orders} (` + orderColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS`),
		updateOrderIf: r.Replace(`UPDATE {orders} SET customer_id = ?, status = ?, items = ?, tracking_number = ?,
		carrier = ?, cancelled_reason = ?, version = ?, created_at = ?, updated_at = ? WHERE id = ? IF version = ?`),

		selectCustomer: r.Replace(`SELECT ` + customerColumns + `, WRITETIME(version) FROM {customers} WHERE id = ?`),
		writeCustomer: r.Replace(`INSERT INTO {customers} (` + customerColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		USING TIMESTAMP ?`),
		insertCustomerIf: r.Replace(`INSERT INTO {customers} (` + customerColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS`),
		updateCustomerIf: r.Replace(`UPDATE {customers} SET email = ?, first_name = ?, last_name = ?, phone = ?,
		version = ?, registered_at = ?, updated_at = ? WHERE id = ? IF version = ?`),

		// The write timestamp is the order's version, not the clock, as
		// for the order's own row.
		writeSummary: r.Replace(`INSERT INTO {summaries} (customer_id, ` + summaryColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?`),
		selectSummaries: r.Replace(`SELECT ` + summaryColumns + ` FROM {summaries}
		WHERE customer_id = ? AND order_id > ? LIMIT ?`),
	}
}

// createStatements returns the DDL that creates generation gen's tables
// when they are missing: the columns and options of
// migrations/scylla/0101_views.cql, with the comment 0250 gives
// generation 0 (see 0101, 0204 and 0250 for the design notes, which hold
// for every generation).
func createStatements(gen int64) []string {
	t := tablesOf(gen)
	comment := fmt.Sprintf("Generation %d of the read models, derived from the events by the projector. "+
		"Each row is written whole at USING TIMESTAMP <its version>: never write it with a timestamp of the clock (see 0250). "+
		"Not refilled when truncated: rebuild them with orderd rebuild (a blue/green rebuild, see README).", gen)
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + t.orders + ` (
			id               uuid PRIMARY KEY,
			customer_id      uuid,
			status           text,
			items            text,
			tracking_number  text,
			carrier          text,
			cancelled_reason text,
			version          bigint,
			created_at       timestamp,
			updated_at       timestamp
		) WITH comment = '` + comment + `'`,
		`CREATE TABLE IF NOT EXISTS ` + t.summaries + ` (
			customer_id uuid,
			order_id    uuid,
			status      text,
			item_count  int,
			quantity    int,
			version     bigint,
			created_at  timestamp,
			updated_at  timestamp,
			PRIMARY KEY (customer_id, order_id)
		) WITH CLUSTERING ORDER BY (order_id ASC) AND comment = '` + comment + `'`,
		`CREATE TABLE IF NOT EXISTS ` + t.customers + ` (
			id            uuid PRIMARY KEY,
			email         text,
			first_name    text,
			last_name     text,
			phone         text,
			version       bigint,
			registered_at timestamp,
			updated_at    timestamp
		) WITH comment = '` + comment + `'`,
	}
}
