package provider

import (
	"context"
	"net/http"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// policyResource is `omnisql_policy`: a tenant's Rego module. Each change stores a new version (the
// control plane keeps them all); destroy deletes every version.
type policyResource struct{ client *client }

type policyModel struct {
	Tenant  types.String `tfsdk:"tenant"`
	Name    types.String `tfsdk:"name"`
	Rego    types.String `tfsdk:"rego"`
	Version types.Int64  `tfsdk:"version"`
}

type policyJSON struct {
	Name    string `json:"name"`
	Rego    string `json:"rego"`
	Version int64  `json:"version"`
}

func newPolicyResource() resource.Resource { return &policyResource{} }

func (r *policyResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_policy"
}

func (r *policyResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		Description: "A tenant's Rego policy module; a change stores a new version.",
		Attributes: map[string]schema.Attribute{
			"tenant":  schema.StringAttribute{Required: true, PlanModifiers: replace},
			"name":    schema.StringAttribute{Required: true, PlanModifiers: replace},
			"rego":    schema.StringAttribute{Required: true, Description: "The module's text (`package …`)."},
			"version": schema.Int64Attribute{Computed: true, Description: "The version the control plane gave it."},
		},
	}
}

func (r *policyResource) Configure(_ context.Context, req resource.ConfigureRequest, _ *resource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*client); ok {
		r.client = c
	}
}

func (r *policyResource) put(ctx context.Context, plan *policyModel) error {
	var stored policyJSON
	path := "/v1/tenants/" + plan.Tenant.ValueString() + "/policies/" + plan.Name.ValueString()
	if err := r.client.call(ctx, http.MethodPut, path, map[string]any{"rego": plan.Rego.ValueString()}, &stored); err != nil {
		return err
	}
	plan.Version = types.Int64Value(stored.Version)
	return nil
}

func (r *policyResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan policyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if !resp.Diagnostics.HasError() {
		r.store(ctx, &plan, &resp.State, &resp.Diagnostics)
	}
}

// store puts the planned text as a new version and records the version in `state`.
func (r *policyResource) store(ctx context.Context, plan *policyModel, state *tfsdk.State, diags *diag.Diagnostics) {
	if err := r.put(ctx, plan); err != nil {
		diags.AddError("Cannot store the policy", err.Error())
		return
	}
	diags.Append(state.Set(ctx, plan)...)
}

func (r *policyResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state policyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var versions []policyJSON
	err := r.client.call(ctx, http.MethodGet, "/v1/tenants/"+state.Tenant.ValueString()+"/policies/"+state.Name.ValueString(), nil, &versions)
	if isNotFound(err) || (err == nil && len(versions) == 0) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the policy", err.Error())
		return
	}
	latest := versions[len(versions)-1]
	state.Rego, state.Version = types.StringValue(latest.Rego), types.Int64Value(latest.Version)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *policyResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan policyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if !resp.Diagnostics.HasError() {
		r.store(ctx, &plan, &resp.State, &resp.Diagnostics)
	}
}

func (r *policyResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state policyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	deleteAt(ctx, r.client, "/v1/tenants/"+state.Tenant.ValueString()+"/policies/"+state.Name.ValueString(), "policy", &resp.Diagnostics)
}

// ImportState takes `tenant/name`.
func (r *policyResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	importTenantScoped(ctx, req, resp, "name")
}
