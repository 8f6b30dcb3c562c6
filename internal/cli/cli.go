// Package cli is orderd's client subcommands: dlq, rebuild and backup (the
// operator's clients of the admin API), bench (a load generator) and
// healthcheck (the container's HEALTHCHECK). They talk to a running orderd
// over HTTP only and import nothing of the server; each reads its own
// flags and the ORDERD_ variables it needs through a getenv parameter.
//
// Each subcommand prints its result to stdout and every failure once, as
// "orderd NAME: …", to stderr, then returns it: the caller only has to exit
// non-zero. -help prints the subcommand's usage and flags to stderr and
// returns nil; a mistyped flag or command prints the error and a one-line
// hint to -help.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// EnvVars are the environment variables the client subcommands read, which
// the server itself does not (but for ORDERD_HTTP_ADDR and
// ORDERD_ADMIN_TOKEN, which they share with it).
var EnvVars = []string{"ORDERD_ADMIN_URL", "ORDERD_ADMIN_TOKEN", "ORDERD_URL", "ORDERD_HTTP_ADDR"}

// command is a client subcommand's flag set and usage.
type command struct {
	*flag.FlagSet
	name   string // as in "orderd NAME"
	usage  string // the usage lines, the commands and what it does; the flags follow
	stderr io.Writer
}

// newCommand returns the flag set of the client subcommand name. It prints
// nothing by itself: parse prints the usage on -help and returns a bad flag
// as a *usageError, which report prints with a hint instead of the usage.
func newCommand(name, usage string, stderr io.Writer) *command {
	fs := flag.NewFlagSet("orderd "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // the flag package calls it on every error, too
	return &command{FlagSet: fs, name: name, usage: usage, stderr: stderr}
}

// printUsage prints the usage and the flags to stderr.
func (c *command) printUsage() {
	c.SetOutput(c.stderr)
	defer c.SetOutput(io.Discard)
	fmt.Fprint(c.stderr, c.usage)
	c.PrintDefaults()
}

// parse parses args, flags anywhere: flag stops at the first argument that
// is not a flag, so it parses again after each one ("replay 42 -token T"
// works as well). It returns the other arguments, in order; nil words and
// no error after -help (the usage printed); a *usageError for a flag it
// does not know or a value it cannot parse.
func (c *command) parse(args []string) ([]string, error) {
	words := []string{}
	for rest := args; ; {
		if err := c.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.printUsage()
				return nil, nil
			}
			return nil, &usageError{err}
		}
		if c.NArg() == 0 {
			return words, nil
		}
		words, rest = append(words, c.Arg(0)), c.Args()[1:]
	}
}

// usageError is a mistyped flag, value or command: report follows it with
// a hint to -help rather than the whole usage.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// report prints err, unless nil, to stderr as "orderd NAME: err", and after
// a *usageError a hint to NAME's -help.
func report(stderr io.Writer, name string, err error) {
	if err == nil {
		return
	}
	fmt.Fprintf(stderr, "orderd %s: %v\n", name, err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "run 'orderd %s -help' for usage\n", name)
	}
}
