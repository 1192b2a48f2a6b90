package provider

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
)

// providers runs the provider in the test process; OpenTofu reaches it through TF_REATTACH_PROVIDERS.
var providers = map[string]func() (tfprotov6.ProviderServer, error){
	"omnisql": providerserver.NewProtocol6WithError(New("test")()),
}

// TestMain starts a real control plane (`omnisql control-plane`, SQLite in a temporary folder) and
// points the provider at it with its platform operator's key.
func TestMain(m *testing.M) {
	if os.Getenv("TF_ACC") == "" {
		fmt.Println("acceptance tests need TF_ACC=1 and TF_ACC_TERRAFORM_PATH (OpenTofu); scripts/test sets both")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "omnisql-tf-")
	if err != nil {
		panic(err)
	}
	// OpenTofu reads no CLI configuration but ours (an empty one): the provider is reattached in-process,
	// so nothing is installed from a registry.
	cliConfig := filepath.Join(dir, "tofurc")
	if err := os.WriteFile(cliConfig, nil, 0o600); err != nil {
		panic(err)
	}
	os.Setenv("TF_CLI_CONFIG_FILE", cliConfig)
	httpPort, grpcPort := freePort(), freePort()
	keyFile := filepath.Join(dir, "operator.key")
	cmd := exec.Command(omnisqlBinary(), "control-plane",
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort), "--grpc-addr", fmt.Sprintf("127.0.0.1:%d", grpcPort),
		"--data-dir", dir, "--bootstrap-key-file", keyFile)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		panic(fmt.Sprintf("cannot start the control plane (%s): %v", omnisqlBinary(), err))
	}
	key := waitForKey(keyFile, 60*time.Second)
	controlPlaneGRPC = fmt.Sprintf("http://127.0.0.1:%d", grpcPort)
	os.Setenv("OMNISQL_ADMIN_URL", fmt.Sprintf("http://127.0.0.1:%d", httpPort))
	os.Setenv("OMNISQL_ADMIN_KEY", key)
	code := m.Run()
	_ = cmd.Process.Kill()
	_, _ = cmd.Process.Wait()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// controlPlaneGRPC is where data planes enrol.
var controlPlaneGRPC string

// omnisqlBinary is OMNISQL_BIN, or the debug build in CARGO_TARGET_DIR (or the repository's target/).
func omnisqlBinary() string {
	if b := os.Getenv("OMNISQL_BIN"); b != "" {
		return b
	}
	target := os.Getenv("CARGO_TARGET_DIR")
	if target == "" {
		target = filepath.Join("..", "..", "..", "..", "target")
	}
	return filepath.Join(target, "debug", "omnisql")
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitForKey(path string, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(100 * time.Millisecond)
	}
	panic("the control plane did not write its operator key within " + timeout.String())
}
