package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/mgsip/mgsip/internal/chanmgcp"
	"github.com/mgsip/mgsip/internal/config"
	"github.com/spf13/cobra"
)

func newImportCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "import",
		Short: "Import the configuration of another call agent",
	}
	c.AddCommand(newImportAsteriskCmd(a))
	return c
}

func newImportAsteriskCmd(a *app) *cobra.Command {
	var (
		out, sipUsers, pbxHost, sipListen, digitMap string
		pbxPort                                     int
		force                                       bool
	)
	c := &cobra.Command{
		Use:   "asterisk MGCP_CONF",
		Short: "Turn an Asterisk chan_mgcp mgcp.conf into an mgsip configuration and the PBX's accounts",
		Long: `Read MGCP_CONF (with its #include files and templates) and write:
  -o FILE (default mgsip.yaml)     the mgsip configuration
  pjsip-mgsip.conf or sip-mgsip.conf next to it: one account per line for the PBX
  mgsip.env next to it: the line secrets, referenced from FILE as ${NAME}
An existing mgsip.env is read first: lines keep the secrets it gives them.
Every setting that was not carried over is printed as FILE:LINE: key: reason.
The result is checked as check-config would check it.
See docs/migrating-from-chan_mgcp.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if sipUsers != "pjsip" && sipUsers != "sip" {
				return usageErr("--sip-users: want pjsip or sip, not %q", sipUsers)
			}
			dir := filepath.Dir(out)
			pbxPath := filepath.Join(dir, sipUsers+"-mgsip.conf")
			envPath := filepath.Join(dir, "mgsip.env")
			if !force {
				for _, p := range []string{out, pbxPath} {
					if _, err := os.Stat(p); err == nil {
						return usageErr("%s exists; --force overwrites it", p)
					}
				}
			}
			secrets := map[string]string{}
			if data, err := os.ReadFile(envPath); err == nil {
				secrets = chanmgcp.ParseEnv(data)
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
			res, err := chanmgcp.Import(args[0], chanmgcp.Options{SIPUsers: sipUsers, PBXHost: pbxHost, PBXPort: pbxPort,
				SIPListen: sipListen, DigitMap: digitMap, Secrets: secrets})
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			for _, n := range res.Notes {
				fmt.Fprintln(a.stderr, n.String())
			}
			files := []struct {
				path string
				data []byte
				mode os.FileMode
			}{{out, res.Config, 0o640}, {pbxPath, res.PBX, 0o640}, {envPath, res.Env, 0o600}}
			for _, f := range files {
				if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
					return err
				}
			}
			fmt.Fprintf(a.stdout, "%s: %d gateway(s), %d line(s), %d trunk channel(s); %d setting(s) not carried over (listed above)\n",
				args[0], res.Gateways, res.Lines, res.Trunks, len(res.Notes))
			fmt.Fprintf(a.stdout, "wrote %s\n", strings.Join([]string{out, pbxPath, envPath}, ", "))
			env := chanmgcp.ParseEnv(res.Env)
			loaded, err := config.Load(out, res.Config, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
			var ce *config.Error
			if errors.As(err, &ce) {
				fmt.Fprintln(a.stdout, ce.Error())
				return &exitError{code: exitFailure, err: fmt.Errorf("the generated %s does not pass check-config", out)}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s: ok: %s\n", out, config.SummaryLine(loaded.Rules.Summary()))
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "mgsip.yaml", "the mgsip configuration to write (the PBX file and mgsip.env go next to it)")
	c.Flags().StringVar(&sipUsers, "sip-users", "pjsip", "PBX side to write: pjsip or sip")
	c.Flags().StringVar(&pbxHost, "pbx-host", "127.0.0.1", "address of the PBX the lines register to")
	c.Flags().IntVar(&pbxPort, "pbx-port", 5060, "SIP port of the PBX")
	c.Flags().StringVar(&sipListen, "sip-listen", "0.0.0.0:5070", "mgsip's SIP listener")
	c.Flags().StringVar(&digitMap, "digit-map", chanmgcp.DefaultDigitMap, "digit map of the generated dial plan (write one that knows your numbering)")
	c.Flags().BoolVar(&force, "force", false, "overwrite an existing configuration and PBX file")
	return c
}
