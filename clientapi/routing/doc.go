// Package routing holds the handlers of /_matrix/client endpoints served by clientapi: each
// group of endpoints is a type with a Routes method listing named handlers.
package routing
