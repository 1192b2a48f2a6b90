package provider

import (
	"context"
	"net/http"
	"sort"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/mapplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// connectionResource is `omnisql_connection`: a tenant's instance of a connector. Secret options are
// write-only: the control plane seals them and never shows them again, so the provider keeps what the
// configuration says and checks only that the control plane still has an option of each name.
type connectionResource struct{ client *client }

type connectionModel struct {
	Tenant          types.String `tfsdk:"tenant"`
	Name            types.String `tfsdk:"name"`
	Connector       types.String `tfsdk:"connector"`
	Version         types.String `tfsdk:"version"`
	Options         types.Map    `tfsdk:"options"`
	SecretOptions   types.Map    `tfsdk:"secret_options"`
	CacheTTLSeconds types.Int64  `tfsdk:"cache_ttl_seconds"`
}

type connectionJSON struct {
	Connector       string            `json:"connector"`
	Version         string            `json:"version"`
	Options         map[string]string `json:"options"`
	SecretOptions   []string          `json:"secret_options"`
	CacheTTLSeconds *int64            `json:"cache_ttl_seconds"`
}

func newConnectionResource() resource.Resource { return &connectionResource{} }

func (r *connectionResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_connection"
}

func (r *connectionResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	replaceMap := []planmodifier.Map{mapplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		Description: "A connection of a tenant to a SaaS app through a connector; its tables appear under the schema `name`. A new `version` upgrades it in place, after that version's smoke tests pass (the control plane refuses the upgrade otherwise); any other change replaces it.",
		Attributes: map[string]schema.Attribute{
			"tenant":    schema.StringAttribute{Required: true, PlanModifiers: replace},
			"name":      schema.StringAttribute{Required: true, PlanModifiers: replace},
			"connector": schema.StringAttribute{Required: true, PlanModifiers: replace},
			"version": schema.StringAttribute{Optional: true, Computed: true,
				Description:   "Pinned connector version (default: the newest in the catalog). Changing it upgrades the connection in place once the version's smoke tests pass.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"options": schema.MapAttribute{ElementType: types.StringType, Optional: true, PlanModifiers: replaceMap,
				Description: "Non-secret parameters (e.g. base_url, orgs)."},
			"secret_options": schema.MapAttribute{ElementType: types.StringType, Optional: true, Sensitive: true, PlanModifiers: replaceMap,
				Description: "Secret parameters (e.g. token), sealed by the control plane and never read back."},
			"cache_ttl_seconds": schema.Int64Attribute{Optional: true, PlanModifiers: []planmodifier.Int64{int64planmodifier.RequiresReplace()}},
		},
	}
}

func (r *connectionResource) Configure(_ context.Context, req resource.ConfigureRequest, _ *resource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*client); ok {
		r.client = c
	}
}

func (r *connectionResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan connectionModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	options := map[string]string{}
	secrets := map[string]string{}
	if !plan.Options.IsNull() {
		resp.Diagnostics.Append(plan.Options.ElementsAs(ctx, &options, false)...)
	}
	if !plan.SecretOptions.IsNull() {
		resp.Diagnostics.Append(plan.SecretOptions.ElementsAs(ctx, &secrets, false)...)
	}
	for k, v := range secrets {
		options[k] = v
	}
	body := map[string]any{"name": plan.Name.ValueString(), "connector": plan.Connector.ValueString(), "options": options,
		"cache_ttl_seconds": plan.CacheTTLSeconds.ValueInt64Pointer()}
	if !plan.Version.IsNull() && !plan.Version.IsUnknown() {
		body["version"] = plan.Version.ValueString()
	}
	var created connectionJSON
	if err := r.client.call(ctx, http.MethodPost, "/v1/tenants/"+plan.Tenant.ValueString()+"/connections", body, &created); err != nil {
		resp.Diagnostics.AddError("Cannot create the connection", err.Error())
		return
	}
	plan.Version = types.StringValue(created.Version)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *connectionResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state connectionModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var c connectionJSON
	err := r.client.call(ctx, http.MethodGet, "/v1/tenants/"+state.Tenant.ValueString()+"/connections/"+state.Name.ValueString(), nil, &c)
	if isNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the connection", err.Error())
		return
	}
	state.Connector, state.Version = types.StringValue(c.Connector), types.StringValue(c.Version)
	if len(c.Options) > 0 || !state.Options.IsNull() {
		options, diags := types.MapValueFrom(ctx, types.StringType, c.Options)
		resp.Diagnostics.Append(diags...)
		state.Options = options
	}
	// A secret changed or removed outside Terraform cannot be seen; one whose name is gone can.
	held := map[string]string{}
	if !state.SecretOptions.IsNull() {
		resp.Diagnostics.Append(state.SecretOptions.ElementsAs(ctx, &held, false)...)
	}
	names := make([]string, 0, len(held))
	for k := range held {
		names = append(names, k)
	}
	sort.Strings(names)
	sort.Strings(c.SecretOptions)
	if strings.Join(names, ",") != strings.Join(c.SecretOptions, ",") {
		state.SecretOptions = types.MapNull(types.StringType)
	}
	state.CacheTTLSeconds = types.Int64PointerValue(c.CacheTTLSeconds)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update is a version change only (every other attribute replaces the connection): the control plane's
// upgrade, which runs the version's smoke tests first and answers 409 with them when they fail.
func (r *connectionResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state connectionModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if plan.Version.IsUnknown() || plan.Version.IsNull() || plan.Version.ValueString() == state.Version.ValueString() {
		resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
		return
	}
	var upgraded struct {
		Connection connectionJSON `json:"connection"`
	}
	path := "/v1/tenants/" + state.Tenant.ValueString() + "/connections/" + state.Name.ValueString() + "/upgrade"
	if err := r.client.call(ctx, http.MethodPost, path, map[string]any{"version": plan.Version.ValueString()}, &upgraded); err != nil {
		resp.Diagnostics.AddError("Cannot upgrade the connection to version "+plan.Version.ValueString(), err.Error())
		return
	}
	plan.Version = types.StringValue(upgraded.Connection.Version)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *connectionResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state connectionModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	deleteAt(ctx, r.client, "/v1/tenants/"+state.Tenant.ValueString()+"/connections/"+state.Name.ValueString(), "connection", &resp.Diagnostics)
}

// ImportState takes `tenant/name`; secret options cannot be imported (set them in the configuration,
// and the next apply replaces the connection with them).
func (r *connectionResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	importTenantScoped(ctx, req, resp, "name")
}
