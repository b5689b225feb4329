package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/mgsip/mgsip/internal/trace"
)

// newLadderCmd prints the MGCP and SIP ladder of a capture file.
func newLadderCmd(a *app) *cobra.Command {
	var call string
	c := &cobra.Command{
		Use:   "ladder FILE.pcap",
		Short: "Print the MGCP+SIP ladder of a capture (pcap or pcapng): responses joined to commands, MGCP calls to SIP Call-IDs",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return usageErr("%v", err)
			}
			defer f.Close()
			if err := trace.Ladder(f, a.stdout, trace.LadderOptions{Call: call}); err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			return nil
		},
	}
	c.Flags().StringVar(&call, "call", "", "only this call: an MGCP call id (C:) or a SIP Call-ID")
	return c
}
