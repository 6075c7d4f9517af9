{
  # Toolchain pin for macOS (M2) and Linux hosts outside containers: one nixpkgs revision fixes the
  # compiler, CMake and Python, so `toolchain_id` in build manifests is the same on every machine
  # that enters `nix develop`. The nixpkgs revision is the one the pinned llama.cpp's own flake uses.
  description = "moebench: hash-pinned llama.cpp benchmark kit (MoE vs dense on consumer and edge hardware)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/23e89b7da85c3640bbc2173fe04f4bd114342367";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "aarch64-darwin" "x86_64-darwin" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in {
      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.python311
            pkgs.cmake
            pkgs.gnumake
            pkgs.git
          ] ++ pkgs.lib.optionals pkgs.stdenv.isLinux [ pkgs.gcc13 pkgs.util-linux ]
            ++ pkgs.lib.optionals pkgs.stdenv.isDarwin [ pkgs.darwin.apple_sdk.frameworks.Metal
                                                         pkgs.darwin.apple_sdk.frameworks.Foundation ];
          # Same determinism inputs as `invoke build` sets, so an interactive build matches.
          SOURCE_DATE_EPOCH = "315532800";  # moebench.build.SOURCE_DATE_EPOCH
          LC_ALL = "C";
          TZ = "UTC";
          shellHook = ''
            [ -x .venv/bin/python ] || scripts/bootstrap.sh
            export PATH="$PWD/.venv/bin:$PATH"
          '';
        };
      });
    };
}
