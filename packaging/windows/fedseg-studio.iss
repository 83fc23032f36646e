; FedSeg Studio: the Windows installer (Inno Setup 6.3 or later).
;
; It installs the PyInstaller one-folder build (packaging/fedseg.spec, then aliases.py):
; fedseg.exe, _internal\ and the copies of fedseg.exe named after Flower's programs
; (flower-superexec.exe, flwr-serverapp.exe), which the SuperLink
; starts by name (engine/federation/programs.py FLOWER_PROGRAMS).
;
; build.ps1 in this folder builds the folder and then compiles this script:
;   iscc /DBundleDir=...\packaging\dist\reader\fedseg-studio /DAppVersion=0.1.0 /DProfile=reader
;        /DSetupIcon=...\packaging\build\fedseg-studio.ico /O...\packaging\dist\reader fedseg-studio.iss
; Every define has a default (below), so `iscc fedseg-studio.iss` alone compiles the reader
; folder that `make reader` / build.ps1 left in packaging\dist\reader. Relative paths are
; relative to this script's folder.
;
; What stays on the machine after uninstalling (user data; the uninstaller leaves it alone):
;   - settings (recent files, window layout): the registry key
;       HKEY_CURRENT_USER\Software\FedSeg Studio\FedSeg Studio
;     (Qt's QSettings, organisation "FedSeg Studio", application "FedSeg Studio");
;   - the app's demo runs: %USERPROFILE%\FedSeg\runs;
;   - a site's working folder when none is chosen: %USERPROFILE%\.fedseg\sites\<site>;
;   - run folders, models and data wherever the user chose to put them.

; ---------------------------------------------------------------------------------------
; Defines (override with iscc /DName=Value).
#ifndef BundleDir
  #define BundleDir "..\dist\reader\fedseg-studio"
#endif
#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef Profile
  #define Profile "reader"
#endif
; The installer's icon: packaging\icons.py renders it from resources\icons\fedseg-studio.svg
; (the spec renders the same icon into PyInstaller's workpath for fedseg.exe).
#ifndef SetupIcon
  #define SetupIcon "..\build\fedseg-studio.ico"
#endif
; Inno Setup needs disk spanning (setup.exe plus setup-N.bin files) once the compressed
; data passes about 4.2 GB; a CUDA (site-node) folder may get there. build.ps1 -DiskSpanning.
#ifndef DiskSpanning
  #define DiskSpanning "no"
#endif

#if VER < EncodeVer(6, 3, 0)
  #error Inno Setup 6.3 or later is needed (ArchitecturesAllowed=x64compatible)
#endif

; Compile-time checks, so that a half-built folder never becomes an installer.
#define Absolute(str P) ((Copy(P, 2, 1) == ":") || (Copy(P, 1, 2) == "\\")) ? P : AddBackslash(SourcePath) + P
#define Bundle Absolute(BundleDir)
#if !FileExists(Bundle + "\fedseg.exe")
  #error BundleDir holds no fedseg.exe: build the folder first (build.ps1), or pass /DBundleDir=FOLDER
#endif
#if !FileExists(Bundle + "\flower-superexec.exe") || !FileExists(Bundle + "\flwr-serverapp.exe")
  #error BundleDir lacks the Flower aliases: run python packaging\aliases.py on it (build.ps1 does)
#endif
#if !FileExists(Absolute(SetupIcon))
  #error SetupIcon not found: render it with python packaging\icons.py packaging\build\fedseg-studio.ico, or pass /DSetupIcon=FILE
#endif

[Setup]
; One AppId for every version and both profiles: a newer installer (or the other profile)
; installs over the previous one, into the same folder, and Windows lists one program.
AppId={{D0D0B163-E916-4D6B-8D71-B1A5CBEFD6A4}
AppName=FedSeg Studio
AppVersion={#AppVersion}
AppVerName=FedSeg Studio {#AppVersion} ({#Profile})
AppPublisher=FedSeg Studio
VersionInfoProductName=FedSeg Studio
VersionInfoDescription=FedSeg Studio Setup
; All users (Program Files, needs administrator rights) by default; the dialog offers
; "only for me" ({autopf} is then %LOCALAPPDATA%\Programs), which needs no rights.
PrivilegesRequired=admin
PrivilegesRequiredOverridesAllowed=dialog
; No spaces and ASCII only in our part of the path (see CheckAppDir below).
DefaultDirName={autopf}\FedSegStudio
DisableDirPage=auto
UsePreviousAppDir=yes
AllowRootDirectory=no
DefaultGroupName=FedSeg Studio
DisableProgramGroupPage=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputDir=..\dist\{#Profile}
OutputBaseFilename=fedseg-studio-{#Profile}-{#AppVersion}-win64-setup
SetupIconFile={#SetupIcon}
UninstallDisplayIcon={app}\fedseg.exe
WizardStyle=modern
SetupLogging=yes
; Compression: LZMA2 at "max", per file (SolidCompression=no). The folder is over 1 GB in
; thousands of files, most of its bytes in already dense DLLs (torch, Qt, SimpleITK), so a
; solid stream gains little, while it costs: Setup can no longer seek to a file, so a
; Retry (a file in use, say) restarts decompression from the start of the whole stream,
; and compiling needs far more time and memory. ultra/ultra64 need several GB of memory
; to compile for a few percent. The compressor runs in its own process.
Compression=lzma2/max
SolidCompression=no
LZMAUseSeparateProcess=yes
DiskSpanning={#DiskSpanning}
; The PATH task (below) edits the environment: tell Explorer, after install and uninstall.
ChangesEnvironment=yes
; An upgrade replaces fedseg.exe and _internal\: offer to close a running FedSeg Studio
; (and its federation processes, which run from the same files) first.
CloseApplications=yes
CloseApplicationsFilter=*.exe,*.dll,*.pyd

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
; Unchecked by default: the folder also holds fedseg's copies named flower-superexec.exe,
; flwr-serverapp.exe..., which on PATH would shadow another Flower installation's programs.
; FedSeg Studio itself never needs it (it finds its programs beside fedseg.exe).
Name: "addtopath"; Description: "Add the installation folder to PATH (the fedseg command in new terminals)"; GroupDescription: "Command line:"; Flags: unchecked

[InstallDelete]
; Upgrades: the new version's _internal\ replaces the old one whole, so that modules and
; DLLs the new version no longer has do not linger and get loaded.
Type: filesandordirs; Name: "{app}\_internal"

[Files]
; The whole folder: fedseg.exe, its Flower aliases (plain copies of it) and _internal\.
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
; fedseg.exe is a console program (the command line, and the federation's helper
; processes); `gui` starts the app. Windows expands %USERPROFILE% when the shortcut starts,
; so file dialogs open in the user's folder, not in the (read-only) installation folder.
Name: "{group}\FedSeg Studio"; Filename: "{app}\fedseg.exe"; Parameters: "gui"; WorkingDir: "%USERPROFILE%"; IconFilename: "{app}\fedseg.exe"; Comment: "Federated CT lesion segmentation"
Name: "{group}\{cm:UninstallProgram,FedSeg Studio}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\FedSeg Studio"; Filename: "{app}\fedseg.exe"; Parameters: "gui"; WorkingDir: "%USERPROFILE%"; IconFilename: "{app}\fedseg.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\fedseg.exe"; Parameters: "gui"; Description: "{cm:LaunchProgram,FedSeg Studio}"; Flags: nowait postinstall skipifsilent runasoriginaluser

[UninstallDelete]
; The installation folder goes completely, with anything written into it after install.
; User data lives elsewhere and stays (see the top of this file): settings in
; HKCU\Software\FedSeg Studio\FedSeg Studio, demo runs in %USERPROFILE%\FedSeg\runs.
; This is why CheckAppDir refuses an existing folder that is not a FedSeg Studio folder.
Type: filesandordirs; Name: "{app}"

[Code]
const
  { Longest accepted installation folder. The folder's deepest files lie about 112
    characters below it (_internal\flwr\supercore\state\alembic\versions\rev_... in the
    Linux build); 100 + 1 + 112 stays well under MAX_PATH (260), the limit of every
    program and DLL that is not long-path aware, and of Windows itself unless
    LongPathsEnabled is set. Longer folders install, then fail at run time. }
  MaxAppDirLength = 100;
  MachineEnvKey = 'SYSTEM\CurrentControlSet\Control\Session Manager\Environment';
  UserEnvKey = 'Environment';

{ Why an installation folder is unacceptable, or '' when it is fine.

  ASCII only: PyTorch and the other native extensions (SimpleITK, Qt plugins, CUDA's
  libraries) are C/C++ code, and some of it passes file paths through narrow-character
  (ANSI) Windows APIs such as fopen or LoadLibraryA. Those read the bytes in the system's
  active code page, so a folder with a character outside that code page (on some
  machines any non-ASCII character, e.g. an accented user name under %LOCALAPPDATA%)
  makes DLLs fail to load ("WinError 126") or files fail to open (pytorch issue 75171).
  Besides: ";" would split the folder when FedSeg Studio puts it first on its child
  processes' PATH (that is how the SuperLink finds flower-superexec.exe), "%" is expanded
  in PATH and by cmd, and "&", "^", "!" and friends are cmd metacharacters. So only
  letters, digits, space and  \ : . _ - ( ) ~  are accepted. }
function CheckAppDir(const Dir: String): String;
var
  I, Code: Integer;
  Ch: String;
begin
  Result := '';
  for I := 1 to Length(Dir) do
  begin
    Code := Ord(Dir[I]);
    Ch := Copy(Dir, I, 1);
    if Code > 127 then
    begin
      Result := Format('The folder "%s" contains the non-ASCII character "%s".'#13#10#13#10 +
        'FedSeg Studio must be installed in a folder whose path is plain ASCII: its PyTorch ' +
        'and other native libraries fail to load from such folders on many Windows systems.'#13#10#13#10 +
        'Choose another folder, for example C:\FedSegStudio.', [Dir, Ch]);
      Exit;
    end;
    if not (((Code >= Ord('A')) and (Code <= Ord('Z'))) or
            ((Code >= Ord('a')) and (Code <= Ord('z'))) or
            ((Code >= Ord('0')) and (Code <= Ord('9'))) or
            (Pos(Ch, ' \:._-()~') > 0)) or ((Ch = ':') and (I <> 2)) then
    begin
      Result := Format('The folder "%s" contains the character "%s".'#13#10#13#10 +
        'FedSeg Studio accepts only letters A-Z, digits, spaces and . _ - ( ) ~ in its ' +
        'installation folder (the folder goes on PATH for its own processes, and native ' +
        'libraries and the command prompt misread other characters).'#13#10#13#10 +
        'Choose another folder, for example C:\FedSegStudio.', [Dir, Ch]);
      Exit;
    end;
  end;
  if Length(Dir) > MaxAppDirLength then
  begin
    Result := Format('The folder "%s" is %d characters long; FedSeg Studio accepts at most %d.'#13#10#13#10 +
      'Its deepest files lie more than 110 characters below the installation folder, and ' +
      'Windows and many libraries cannot open paths longer than 260 characters.'#13#10#13#10 +
      'Choose a shorter folder, for example C:\FedSegStudio.', [Dir, Length(Dir), MaxAppDirLength]);
    Exit;
  end;
end;

{ True when Dir does not exist, is empty, or already holds FedSeg Studio (an upgrade). }
function DirIsFreeOrOurs(const Dir: String): Boolean;
var
  FindRec: TFindRec;
begin
  Result := True;
  if not DirExists(Dir) then
    Exit;
  if FileExists(AddBackslash(Dir) + 'fedseg.exe') or FileExists(AddBackslash(Dir) + 'unins000.dat') then
    Exit;
  if FindFirst(AddBackslash(Dir) + '*', FindRec) then
  begin
    try
      repeat
        if (FindRec.Name <> '.') and (FindRec.Name <> '..') then
          Result := False;
      until (not Result) or (not FindNext(FindRec));
    finally
      FindClose(FindRec);
    end;
  end;
end;

function CheckInstallDir(const Dir: String): String;
begin
  Result := CheckAppDir(Dir);
  if (Result = '') and not DirIsFreeOrOurs(Dir) then
    Result := Format('The folder "%s" already exists and holds other files.'#13#10#13#10 +
      'Uninstalling FedSeg Studio deletes its installation folder with everything in it, ' +
      'so it installs only into a new or empty folder, or over an earlier FedSeg Studio.', [Dir]);
end;

{ The Select Destination Location page: refuse at once, with the reason. }
function NextButtonClick(CurPageID: Integer): Boolean;
var
  Problem: String;
begin
  Result := True;
  if CurPageID = wpSelectDir then
  begin
    Problem := CheckInstallDir(WizardDirValue);
    if Problem <> '' then
    begin
      SuppressibleMsgBox(Problem, mbError, MB_OK, IDOK);
      Result := False;
    end;
  end;
end;

{ Again just before installing: covers /DIR= on a silent install, and upgrades, whose
  folder page is skipped. A non-empty result stops Setup with that message. }
function PrepareToInstall(var NeedsRestart: Boolean): String;
begin
  Result := CheckInstallDir(ExpandConstant('{app}'));
end;

{ PATH (the addtopath task). An all-users install edits the machine's PATH, a per-user
  install the user's own (HKCU\Environment): the uninstaller, which runs in the same
  mode, can then always remove what Setup added, and every user of an all-users install
  gets the fedseg command. }
function EnvRoot: Integer;
begin
  if IsAdminInstallMode then
    Result := HKEY_LOCAL_MACHINE
  else
    Result := HKEY_CURRENT_USER;
end;

function EnvKey: String;
begin
  if IsAdminInstallMode then
    Result := MachineEnvKey
  else
    Result := UserEnvKey;
end;

function SameDir(const A, B: String): Boolean;
begin
  Result := CompareText(RemoveBackslashUnlessRoot(Trim(RemoveQuotes(Trim(A)))),
                        RemoveBackslashUnlessRoot(Trim(B))) = 0;
end;

{ PathValue without its entries naming Dir; Found tells whether it had any. }
function PathWithout(const PathValue, Dir: String; var Found: Boolean): String;
var
  Rest, Entry: String;
  P: Integer;
begin
  Result := '';
  Found := False;
  Rest := PathValue;
  while Rest <> '' do
  begin
    P := Pos(';', Rest);
    if P = 0 then
    begin
      Entry := Rest;
      Rest := '';
    end
    else
    begin
      Entry := Copy(Rest, 1, P - 1);
      Rest := Copy(Rest, P + 1, Length(Rest));
    end;
    if SameDir(Entry, Dir) then
      Found := True
    else if Entry <> '' then
    begin
      if Result <> '' then
        Result := Result + ';';
      Result := Result + Entry;
    end;
  end;
end;

procedure AddAppToPath;
var
  Value, Dir: String;
  Found: Boolean;
begin
  Dir := ExpandConstant('{app}');
  if not RegQueryStringValue(EnvRoot, EnvKey, 'Path', Value) then
    Value := '';
  PathWithout(Value, Dir, Found);
  if Found then
    Exit;
  if (Value <> '') and (Copy(Value, Length(Value), 1) <> ';') then
    Value := Value + ';';
  { REG_EXPAND_SZ: keeps the %VAR% entries already in PATH working. }
  if not RegWriteExpandStringValue(EnvRoot, EnvKey, 'Path', Value + Dir) then
    SuppressibleMsgBox('Could not add ' + Dir + ' to PATH; add it by hand if you want the fedseg command in terminals.',
      mbInformation, MB_OK, IDOK);
end;

procedure RemoveAppFromPath;
var
  Value, NewValue: String;
  Found: Boolean;
begin
  if not RegQueryStringValue(EnvRoot, EnvKey, 'Path', Value) then
    Exit;
  NewValue := PathWithout(Value, ExpandConstant('{app}'), Found);
  if Found then
    if not RegWriteExpandStringValue(EnvRoot, EnvKey, 'Path', NewValue) then
      Log('Could not remove the installation folder from PATH');
end;

procedure CurStepChanged(CurStep: TSetupStep);
begin
  if CurStep = ssPostInstall then
  begin
    { An upgrade that unticks the task takes the folder off PATH again. }
    if WizardIsTaskSelected('addtopath') then
      AddAppToPath
    else
      RemoveAppFromPath;
  end;
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep = usPostUninstall then
    RemoveAppFromPath;
end;
