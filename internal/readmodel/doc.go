// Package readmodel is the read side of orderd: the views that GET requests
// read, and Queries, which serves them with read-your-writes waits.
//
// The package is backend-agnostic. Projection is a set of pure functions
// (Order.Apply, Customer.Apply) that fold one event into one row; a backend
// (the views_ files of internal/sqlite and internal/cql) stores the rows. Each backend has
// one write method, Apply(ctx, events) error, which is a store.Handler: the
// change feed (store.Feed) pushes committed events to it under the consumer
// name of the projector. The feed owns the projector's progress, so the
// views keep none: a row's version says which of its aggregate's events it
// holds, which makes a redelivered event harmless, and an event that skips
// past version+1 (ErrGap) can only be a bug, since the feed never leaves a
// gap. readmodeltest is the conformance suite every backend runs.
package readmodel
