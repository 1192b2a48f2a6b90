package provider

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

const accessConfig = `
resource "omnisql_tenant" "globex" {
  id     = "tf-globex"
  name   = "Globex"
  region = "eu"
}

resource "omnisql_principal" "ann" {
  tenant     = omnisql_tenant.globex.id
  id         = "ann"
  role       = "tenant_member"
  groups     = ["sales"]
  attributes = { region = "emea" }
}

resource "omnisql_api_key" "ann" {
  tenant    = omnisql_tenant.globex.id
  principal = omnisql_principal.ann.id
}

resource "omnisql_principal" "k8s" {
  tenant  = "_platform"
  id      = "tf-k8s-eu"
  kind    = "service_account"
  role    = "data_plane_operator"
  regions = ["eu"]
}

resource "omnisql_enrollment_token" "eu" {
  region = "eu"
}
`

// The key in the state authenticates as its principal: it is the key the control plane made.
func keyWorks(want bool) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		key := lastKey
		if rs, ok := s.RootModule().Resources["omnisql_api_key.ann"]; ok {
			key = rs.Primary.Attributes["key"]
			lastKey = key
		}
		var me struct {
			ID string `json:"id"`
		}
		err := newClient(os.Getenv("OMNISQL_ADMIN_URL"), key).call(context.Background(), http.MethodGet, "/v1/me", nil, &me)
		switch {
		case want && err != nil:
			return fmt.Errorf("the created key does not work: %v", err)
		case want && me.ID != "ann":
			return fmt.Errorf("the key authenticates as %q", me.ID)
		case !want && err == nil:
			return fmt.Errorf("the key still works after destroy")
		}
		return nil
	}
}

var lastKey string

// principalHas checks what the control plane holds for a principal.
func principalHas(tenant, id string, groups []string, region string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		var page struct {
			Items []principalJSON `json:"items"`
		}
		if err := adminClient().call(context.Background(), http.MethodGet, "/v1/tenants/"+tenant+"/principals", nil, &page); err != nil {
			return err
		}
		for _, p := range page.Items {
			if p.ID == id {
				if strings.Join(p.Groups, ",") != strings.Join(groups, ",") || p.Attributes["region"] != region {
					return fmt.Errorf("principal %s has groups %v and attributes %v", id, p.Groups, p.Attributes)
				}
				return nil
			}
		}
		return fmt.Errorf("principal %s not found", id)
	}
}

func TestAccAccess(t *testing.T) {
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: providers,
		CheckDestroy:             keyWorks(false),
		Steps: []resource.TestStep{
			{
				Config: accessConfig,
				Check: resource.ComposeAggregateTestCheckFunc(
					keyWorks(true),
					resource.TestCheckResourceAttrWith("omnisql_api_key.ann", "key", func(v string) error {
						if !strings.HasPrefix(v, "omk") {
							return fmt.Errorf("not an OmniSQL key: %.3s…", v)
						}
						return nil
					}),
					resource.TestCheckResourceAttrWith("omnisql_enrollment_token.eu", "token", func(v string) error {
						if !strings.HasPrefix(v, "omen") {
							return fmt.Errorf("not an enrollment token: %.4s…", v)
						}
						return nil
					}),
					resource.TestCheckResourceAttr("omnisql_principal.k8s", "regions.0", "eu"),
				),
			},
			{ResourceName: "omnisql_principal.ann", ImportState: true, ImportStateId: "tf-globex/ann", ImportStateVerify: true},
			// Groups and attributes change in place: the same principal (its key still works) with new ones.
			{
				Config: strings.Replace(strings.Replace(accessConfig, `["sales"]`, `["sales", "support"]`, 1), `"emea"`, `"apac"`, 1),
				Check: resource.ComposeAggregateTestCheckFunc(
					keyWorks(true),
					principalHas("tf-globex", "ann", []string{"sales", "support"}, "apac"),
				),
			},
			{ResourceName: "omnisql_principal.k8s", ImportState: true, ImportStateId: "_platform/tf-k8s-eu", ImportStateVerify: true},
		},
	})
}

// A real data plane enrols with a token of region tf-dp; the data source lists it, and only it.
func TestAccDataPlanes(t *testing.T) {
	var token struct {
		Token string `json:"token"`
	}
	if err := adminClient().call(context.Background(), http.MethodPost, "/v1/enrollment-tokens", map[string]any{"region": "tf-dp"}, &token); err != nil {
		t.Fatal(err)
	}
	dp := exec.Command(omnisqlBinary(), "data-plane", "--control-plane", controlPlaneGRPC, "--enrollment-token", token.Token,
		"--state-dir", t.TempDir(), "--flight-addr", "127.0.0.1:0")
	dp.Env = append(os.Environ(), "HOSTNAME=tf-dp-0")
	if err := dp.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = dp.Process.Kill(); _, _ = dp.Process.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var all []map[string]any
		_ = adminClient().call(context.Background(), http.MethodGet, "/v1/data-planes", nil, &all)
		if len(all) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the data plane never enrolled")
		}
		time.Sleep(100 * time.Millisecond)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: providers,
		Steps: []resource.TestStep{{
			Config: `
data "omnisql_data_planes" "dp" { region = "tf-dp" }
data "omnisql_data_planes" "none" { region = "nowhere" }`,
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("data.omnisql_data_planes.dp", "data_planes.#", "1"),
				resource.TestCheckResourceAttr("data.omnisql_data_planes.dp", "data_planes.0.hostname", "tf-dp-0"),
				resource.TestCheckResourceAttr("data.omnisql_data_planes.dp", "data_planes.0.region", "tf-dp"),
				resource.TestCheckResourceAttr("data.omnisql_data_planes.none", "data_planes.#", "0"),
			),
		}},
	})
}
